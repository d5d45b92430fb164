"""Run a workload on engine URLs, each on its own store and server, and write one result each.

A server engine URL without a host gets a server from ``obsqueue.servers.resolve_engine`` (the
environment's URL, else a throwaway instance; ``?server_durability=…`` picks another profile and
is part of the label). A file engine URL without a path gets a file in a temporary directory.
Each engine runs in rounds beside its ceiling and peers (``lineup.py``). Whatever happens to one
engine — no server, a failing or hanging run — becomes its result's ``status`` and ``reason``
and the next engine runs. Servers, files and worker processes are gone when a URL is done, also
when it ends in an exception or Ctrl-C.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from obsqueue.benchmarks.document import build_document, write_document
from obsqueue.benchmarks.durability import Config
from obsqueue.benchmarks.engine_target import EngineTarget, engine_guarantees
from obsqueue.benchmarks.lineup import lineup
from obsqueue.benchmarks.progress import LiveProgress
from obsqueue.benchmarks.rounds import RoundsResult, entrant, run_rounds
from obsqueue.benchmarks.workload import Workload
from obsqueue.engines.base import Capability
from obsqueue.results import peers_once_per_backend
from obsqueue.servers import ResolvedEngine, engine_label, resolve_engine

__all__ = ["bench_engine", "run_benchmarks"]


def run_benchmarks(
    configs: list[Config],
    workload: Workload,
    results_dir: Path,
    *,
    env_urls: Mapping[str, str],
    live: LiveProgress,
    references: str = "all",
) -> list[dict[str, Any]]:
    """Every engine configuration in order; returns the documents written (one each).
    ``references="ceiling"`` leaves the peer libraries out (the raw ceiling still runs);
    ``"auto"`` runs them beside the first configuration of each backend only."""
    documents = []
    with_peers = peers_once_per_backend([c.given for c in configs])
    for config in configs:
        if references == "auto":
            chosen = "all" if config.given in with_peers else "ceiling"
        else:
            chosen = references
        live.prefix = f"{config.given}{config.suffix} {workload.name}: "
        try:
            document = bench_engine(
                config, workload, env_urls=env_urls, live=live, references=chosen
            )
        except Exception as exc:  # one engine's failure is its result; the next one runs
            reason = f"{type(exc).__name__}: {exc}"
            label = engine_label(config.given) + config.suffix
            document = build_document(
                engine=label, url=config.given, workload=workload, status="failed", reason=reason
            )
        path = write_document(results_dir, document)
        live.log(_line(document, path))
        documents.append(document)
    return documents


def bench_engine(
    config: Config,
    workload: Workload,
    *,
    env_urls: Mapping[str, str],
    live: LiveProgress,
    references: str = "all",
) -> dict[str, Any]:
    """One engine configuration's result (``ok``, ``failed`` or ``unavailable``)."""
    with (
        tempfile.TemporaryDirectory(prefix="obsq-bench-") as tmp,
        resolve_engine(config.given, env=env_urls, file_dir=Path(tmp)) as resolved,
    ):
        label = resolved.label + config.suffix
        base: dict[str, Any] = {"engine": label, "url": resolved.url, "workload": workload}
        if resolved.unavailable:
            return build_document(**base, status="unavailable", reason=resolved.unavailable)
        if Capability.MULTI_PROCESS not in resolved.engine_class.capabilities:
            reason = (
                f"{resolved.label} keeps its queue inside one process; the harness runs producers"
                " and consumers in separate processes"
            )
            return build_document(**base, status="unavailable", reason=reason)
        options = {**workload.engine, **config.options}
        return _measured(resolved, workload, options, Path(tmp), live, base, references)


def _measured(
    resolved: ResolvedEngine,
    workload: Workload,
    options: dict[str, Any],
    tmp: Path,
    live: LiveProgress,
    base: dict[str, Any],
    references: str,
) -> dict[str, Any]:
    namespace = f"b{uuid.uuid4().hex[:8]}"
    engine = EngineTarget(resolved.url, namespace=namespace, options=options)
    server = resolved.server
    server_url = server.url if server else None
    found = lineup(resolved.url, server_url, str(tmp / "reference.db"), workload, references)
    if found.note:
        live.log(f"{base['engine']}: {found.note}")
    described = {"obsqueue": engine.describe()}
    for target in found.targets:
        described[target.name] = _describe(target)
    rounds = RoundsResult()
    try:
        weaker = engine_guarantees(resolved.url).weaker_than_obsqueue()
        rounds = run_rounds([entrant(engine, weaker), *found.entrants], workload, live.line)
    finally:
        for target in [engine, *found.targets]:
            if problem := _cleanup(target):
                live.log(f"{base['engine']}: {target.name} cleanup failed: {problem}")
    failure = rounds.failure_of("obsqueue")
    return build_document(
        **base,
        status="failed" if failure else "ok",
        reason=failure,
        rounds=rounds,
        durability=described["obsqueue"]["engine"].get("durability", {}),
        server=server.describe() if server else None,
        references=found.references(),
        targets=described,
    )


def _describe(target: Any) -> dict[str, Any]:
    try:
        described: dict[str, Any] = target.describe()
    except Exception as exc:
        return {"name": target.name, "error": f"describe() failed: {exc}"}
    return described


def _cleanup(target: Any) -> str | None:
    try:
        target.cleanup()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _line(document: dict[str, Any], path: Path) -> str:
    engine = document["engine"]
    if document["status"] != "ok":
        return f"{engine}: {document['status']}: {document['reason']} -> {path}"
    summary = document["summary"].get("obsqueue", {})
    figures = summary.get("figures", {})
    shown = ", ".join(f"{k}={v:g}" for k, v in figures.items() if k in SHOWN)
    shown = shown or f"{len(document['points'])} points"
    ratio = summary.get("ratio_to_ceiling")
    tail = f" ({ratio['median']:.2f}x the ceiling)" if ratio else ""
    return f"{engine}: {shown}{tail} -> {path}"


SHOWN = ("drained_per_s", "e2e_p50_ms", "e2e_p99_ms", "wakeup_p50_ms", "recovery_s")
