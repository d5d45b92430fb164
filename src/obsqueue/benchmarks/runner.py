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
from urllib.parse import urlsplit

from obsqueue.benchmarks.drain import DrainWorkload, run_drain
from obsqueue.conformance.spec import needs_server, split_server_durability, with_server_url
from obsqueue.engines import engine_class
from obsqueue.results import environment, safe_label, write_results
from obsqueue.servers import ENV_VARS, ServerHandle, provision

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
        url, durability = split_server_durability(given)
        cls = engine_class(url)
        server: ServerHandle | None = None
        with tempfile.TemporaryDirectory(prefix="obsq-bench-") as tmp:
            engine_url = url
            if needs_server(url):
                kind = cls.server_kind or ""
                progress(f"{given}: starting or finding a {kind} server")
                env_url = env_urls.get(ENV_VARS.get(kind, "")) if durability == "durable" else None
                server = provision(kind, env_url=env_url, durability=durability)
                engine_url = with_server_url(url, server.url)
            elif _names_no_file(url) and cls.server_kind is None:
                engine_url = f"{urlsplit(url).scheme}:///{Path(tmp) / 'bench.db'}"
            try:
                result = run_drain(
                    engine_url,
                    workload,
                    server_url=server.url if server else None,
                    progress=progress,
                )
                if server is not None:
                    result["server"] = server.describe()
            finally:
                if server is not None:
                    server.stop()
        label = urlsplit(url).scheme + ("" if durability == "durable" else f"-{durability}")
        result["server_durability"] = durability
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


def _names_no_file(url: str) -> bool:
    """``sqlite://`` or ``huey+sqlite://``: a file engine URL that leaves the file to us."""
    parts = urlsplit(url)
    return parts.scheme != "memory" and not parts.path.strip("/")
