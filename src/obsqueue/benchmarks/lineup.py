"""Who runs beside an engine: its ceiling and peers from ``benchmarks.peers`` when installed.

``peers.targets_for`` is imported lazily. Where the ``peers`` package is not there, the run goes
on without peers and the result says so (``references.note``). For ``recovery`` each reference
gets the workload's ``lease_s`` — the engine's lease — as its library's own recovery period
(``options["recovery_s"]``, ``docs/peers.md``), so a peer that redelivers is timed like for like,
not waited for past the probe's window at its library's 30-60 s default. For the ``drain`` shape
(``preload``, one session, one consumer) the in-process raw loop of ``references.py`` still gives
the ceiling, labelled as such. A peer lookup that raises is reported the same way, never hidden.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from obsqueue.benchmarks.references import Reference, reference_for
from obsqueue.benchmarks.rounds import Entrant, entrant
from obsqueue.benchmarks.targets import WorkloadTarget
from obsqueue.benchmarks.traffic import Outcome, Tick
from obsqueue.benchmarks.workload import Workload

__all__ = ["Lineup", "lineup"]

PEERS_MODULE = "obsqueue.benchmarks.peers"


@dataclass
class Lineup:
    """The entrants beside the engine, where they came from, and why any are missing."""

    entrants: list[Entrant]
    targets: list[WorkloadTarget]
    source: str | None
    note: str | None

    def references(self) -> dict[str, str | None]:
        return {"source": self.source, "note": self.note}


def lineup(
    url: str,
    server_url: str | None,
    file_path: str | None,
    workload: Workload,
    references: str = "all",
) -> Lineup:
    try:
        peers = importlib.import_module(PEERS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != PEERS_MODULE:
            raise
        return _legacy(url, server_url, workload)
    try:
        found = _call(peers.targets_for, url, server_url, file_path)
    except Exception as exc:
        failed = f"{PEERS_MODULE}.targets_for failed: {type(exc).__name__}: {exc}"
        return Lineup([], [], PEERS_MODULE, failed + " (no ceiling or peers in this run)")
    none = None if found else f"{PEERS_MODULE} has no ceiling or peer for this backend"
    if references == "ceiling":
        found = [t for t in found if t.kind == "ceiling"]
        none = none or "peer libraries left out (--references ceiling): only the raw ceiling ran"
    if workload.measure == "recovery":
        lease_s = float(workload.recovery.get("lease_s", 30.0))
        found = [
            dataclasses.replace(t, options={**t.options, "recovery_s": lease_s}) for t in found
        ]
    return Lineup([entrant(t) for t in found], found, PEERS_MODULE, none)


def _call(targets_for: Any, url: str, server_url: str | None, file_path: str | None) -> Any:
    """``targets_for(url, server_url[, file_path])``, whichever it takes."""
    takes_file = len(inspect.signature(targets_for).parameters) >= 3
    got = targets_for(url, server_url, file_path) if takes_file else targets_for(url, server_url)
    return list(got)


def _legacy(url: str, server_url: str | None, workload: Workload) -> Lineup:
    note = f"{PEERS_MODULE} is not installed: no peer libraries in this run"
    drain_shape = (
        workload.measure == "throughput"
        and workload.arrival.mode == "preload"
        and workload.sessions == 1
        and workload.consumers == 1
    )
    reference = reference_for(url, server_url) if drain_shape else None
    if reference is None:
        return Lineup([], [], None, note + ", and no raw ceiling for this workload")
    note += "; the ceiling is the in-process raw loop of benchmarks/references.py"
    return Lineup([_legacy_entrant(reference)], [], "obsqueue.benchmarks.references", note)


def _legacy_entrant(reference: Reference) -> Entrant:
    def run(workload: Workload, tick: Tick) -> Outcome:
        payload = {"blob": "x" * workload.payload.max_bytes}
        figures = reference.run(workload.total_messages, payload)
        tick(workload.total_messages, workload.total_messages)
        return Outcome(
            figures={k: float(figures[k]) for k in ("enqueue_per_s", "drained_per_s")},
            notes=[f"{reference.name}, enqueue then drain in the harness process"],
        )

    return Entrant(f"raw-{reference.backend}", "ceiling", (), run)
