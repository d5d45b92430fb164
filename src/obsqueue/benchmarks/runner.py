"""Run a workload on engine URLs, each on its own store and server, and write results JSON.

A server engine URL without a host gets a server the way the conformance suite gets one: the
URL in ``env_urls`` for its kind, else a throwaway instance in its durable configuration
(``?server_durability=everysec|none`` on a Redis URL picks another profile; the label says
so). A file engine URL without a path (``sqlite://``) gets a file in a temporary directory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from obsqueue.benchmarks.drain import DrainWorkload, run_drain
from obsqueue.errors import EngineUnavailableError
from obsqueue.results import environment, safe_label, write_results
from obsqueue.servers import resolve_engine

__all__ = ["bench_path", "run_drain_benchmarks"]


def bench_path(directory: Path, engine_label: str, workload: str) -> Path:
    return directory / f"bench-{safe_label(engine_label)}-{workload}.json"


def run_drain_benchmarks(
    urls: list[str],
    workload: DrainWorkload,
    results_dir: Path,
    *,
    env_urls: Mapping[str, str],
    progress: Callable[[str], None],
) -> list[Path]:
    """Run the drain workload on every URL, in order; one results file per engine."""
    written = []
    for given in urls:
        with (
            tempfile.TemporaryDirectory(prefix="obsq-bench-") as tmp,
            resolve_engine(given, env=env_urls, file_dir=Path(tmp)) as resolved,
        ):
            if resolved.unavailable:
                raise EngineUnavailableError(f"{given}: {resolved.unavailable}")
            server = resolved.server
            result = run_drain(
                resolved.url,
                workload,
                server_url=server.url if server else None,
                progress=progress,
            )
            if server is not None:
                result["server"] = server.describe()
        label = resolved.label
        result["server_durability"] = resolved.server_durability
        result["environment"] = environment()
        path = write_results(bench_path(results_dir, label, "drain"), "benchmark", result)
        figures = result["figures"]
        ratio = figures.get("drained_vs_reference")
        progress(
            f"{label}: {figures['enqueue_per_s']:.0f} enqueue/s, "
            f"{figures['drained_per_s']:.0f} drained/s"
            + (f" ({ratio:.2f}x the raw reference)" if ratio is not None else "")
            + f" -> {path}"
        )
        written.append(path)
    return written
