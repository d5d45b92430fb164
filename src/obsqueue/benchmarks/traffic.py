"""One run of traffic through one target: producer and consumer processes, then its figures.

``preload`` enqueues everything, then starts the drain (``enqueue_per_s``, ``drained_per_s``,
``server_bytes_per_pending``); ``closed`` sends as fast as the producers can while consumers run;
``rate`` sends on the open-loop schedule. Latency stages are measured from each message's
intended send time: ``enqueue`` (enqueue returned), ``delivered`` (the target handed it to a
consumer, for targets that report it), ``processed`` = ``e2e`` (acknowledged). In ``preload``
the stages would measure the backlog, not the target, so they are not reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from obsqueue.benchmarks.hist import decode_merge, percentile_figures, percentile_table
from obsqueue.benchmarks.loadgen import plan_producers, session_ids
from obsqueue.benchmarks.procs import WorkerGroup
from obsqueue.benchmarks.storage import backend_of, storage_bytes
from obsqueue.benchmarks.targets import WorkloadTarget
from obsqueue.benchmarks.workers import DRAIN, GO, STOP, ConsumerRole, consumer_main, producer_main
from obsqueue.benchmarks.workload import Workload

__all__ = ["Outcome", "Tick", "run_traffic", "target_backend"]

#: Progress callback: (messages processed so far, messages in this run).
Tick = Callable[[int, int], None]


@dataclass
class Outcome:
    """A target's figures from one run (or a sweep of runs)."""

    figures: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, list[list[float]]] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def target_backend(target: WorkloadTarget) -> str:
    return target.backend if target.backend not in ("", "obsqueue") else backend_of(target.address)


def run_traffic(
    target: WorkloadTarget,
    workload: Workload,
    *,
    rate_per_s: float | None = None,
    tick: Tick = lambda _done, _total: None,
) -> Outcome:
    """Run ``workload`` once through ``target`` (already prepared); ``rate_per_s``: open loop."""
    if rate_per_s is None and workload.arrival.mode == "rate":
        rate_per_s = workload.arrival.rate_per_s  # the file's own offered rate (open loop)
    mode = "rate" if rate_per_s is not None else workload.arrival.mode
    plans = plan_producers(workload, rate_per_s=rate_per_s)
    total = sum(len(p.sends) for p in plans)
    sessions = session_ids(workload.sessions)
    consumers = min(workload.consumers, len(sessions))
    deadline = time.monotonic() + workload.timeout_s
    backend = target_backend(target)
    storage_delta = None
    with WorkerGroup(consumers) as group:
        for i in range(consumers):
            role = ConsumerRole(i, tuple(sessions[i::consumers]), wait_for_drain=mode == "preload")
            group.start(consumer_main, target, role)
        for plan in plans:
            group.start(producer_main, target, plan)
        group.collect("ready", consumers + len(plans), deadline)
        before = storage_bytes(backend, target.address) if mode == "preload" else None
        group.shared.set(GO)
        drain_start = 0
        if mode == "preload":
            group.collect("producer", len(plans), deadline)
            after = storage_bytes(backend, target.address)
            if before is not None and after is not None:
                storage_delta = after - before
            drain_start = time.monotonic_ns()
            group.shared.set(DRAIN)
        group.wait_processed(total, deadline, lambda done: tick(done, total))
        producers = group.collect("producer", len(plans), deadline)
        group.shared.set(STOP)
        consumed = group.collect("consumer", consumers, deadline + 30)
    return _outcome(mode, total, producers, consumed, drain_start, storage_delta)


def _outcome(
    mode: str,
    total: int,
    producers: list[dict[str, Any]],
    consumers: list[dict[str, Any]],
    drain_start: int,
    storage_delta: int | None,
) -> Outcome:
    measured = sum(c["measured"] for c in consumers)
    last = max(c["last_ns"] for c in consumers)
    start = drain_start or min(p["first_ns"] for p in producers)
    sent_span = max(p["last_ns"] for p in producers) - min(p["first_ns"] for p in producers)
    figures: dict[str, float] = {}
    if measured and last > start:
        figures["drained_per_s"] = round(measured / ((last - start) / 1e9), 1)
    if sent_span > 0:
        figures["enqueue_per_s"] = round(total / (sent_span / 1e9), 1)
    cpu = sum(r["cpu_s"] for r in [*producers, *consumers])
    figures["client_cpu_s_per_1000"] = round(cpu / total * 1000, 4)
    figures["peak_rss_mib"] = max(r["peak_rss_mib"] for r in [*producers, *consumers])
    if storage_delta is not None and storage_delta > 0:
        figures["server_bytes_per_pending"] = round(storage_delta / total, 1)
    histograms: dict[str, list[list[float]]] = {}
    if mode != "preload":
        stages = {
            "e2e": decode_merge(c["e2e"] for c in consumers),
            "enqueue": decode_merge(p["enqueue"] for p in producers),
            "delivered": decode_merge(c["delivered"] for c in consumers),
        }
        for stage, hist in stages.items():
            figures.update(percentile_figures(hist, stage))
            if table := percentile_table(hist):
                histograms[stage] = table
        if "e2e" in histograms:
            histograms["processed"] = histograms["e2e"]
        if mode == "rate":
            delay = decode_merge(p["send_delay"] for p in producers)
            figures.update(
                {k: v for k, v in percentile_figures(delay, "send_delay").items() if "p99_" in k}
            )
    return Outcome(figures, histograms)
