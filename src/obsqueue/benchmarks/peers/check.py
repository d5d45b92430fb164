"""A closed-loop check of one target: enqueue N messages over S sessions, then drain them with C
consumer processes — every message delivered, and (for a target that claims it) each session in
order. The integration tests and ``python -m obsqueue.benchmarks.peers`` run it; the harness's
workloads are the measurement, this is the quick look (enqueue/s and drained/s of one pass).

Consumers are separate processes (``spawn``), each opening its own session and given every C-th
session; the drain is timed from the moment they are told to start until ``pending()`` reads 0
in the parent. Deliveries carry ``time.monotonic()`` (one clock for every process on Linux), so
per-session order is judged across consumers.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import time
from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from typing import Any

from obsqueue.benchmarks.targets import WorkloadTarget

__all__ = ["DrainCheck", "drain_check"]

READY_TIMEOUT_S = 60.0


@dataclass
class DrainCheck:
    """What one pass saw: rates, and every delivery as ``(monotonic_s, session, seq)``."""

    target: str
    messages: int
    sessions: int
    consumers: int
    enqueue_per_s: float
    drained_per_s: float
    deliveries: list[tuple[float, str, int]] = field(default_factory=list)

    def missing(self) -> set[tuple[str, int]]:
        """Messages enqueued and never delivered."""
        sent = {(f"s{i % self.sessions}", i) for i in range(self.messages)}
        return sent - {(s, i) for _, s, i in self.deliveries}

    def duplicates(self) -> int:
        return len(self.deliveries) - len({(s, i) for _, s, i in self.deliveries})

    def out_of_order(self) -> int:
        """Deliveries that came after a later message of the same session."""
        by_session: dict[str, list[int]] = defaultdict(list)
        for _, session, seq in sorted(self.deliveries):
            by_session[session].append(seq)
        return sum(
            1
            for seqs in by_session.values()
            for before, after in itertools.pairwise(seqs)
            if after < before
        )

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "messages": self.messages,
            "sessions": self.sessions,
            "consumers": self.consumers,
            "enqueue_per_s": round(self.enqueue_per_s, 1),
            "drained_per_s": round(self.drained_per_s, 1),
            "missing": len(self.missing()),
            "duplicates": self.duplicates(),
            "out_of_order": self.out_of_order(),
        }


def _consumer(
    target: WorkloadTarget,
    sessions: list[str] | None,
    ready: Any,
    go: Event,
    stop: Any,
    results: Any,
) -> None:
    seen: list[tuple[float, str, int]] = []

    def on_message(session_id: str, payload: str) -> None:
        seen.append((time.monotonic(), session_id, int(json.loads(payload)["i"])))

    session = target.open()
    try:
        ready.release()
        go.wait()
        session.consume(sessions, on_message, stop)
    finally:
        session.close()
        results.put(seen)


def drain_check(
    target: WorkloadTarget,
    *,
    messages: int = 2000,
    sessions: int = 20,
    consumers: int = 4,
    route_sessions: bool = True,
    timeout_s: float = 300.0,
) -> DrainCheck:
    """One pass through ``target`` (prepared first, not cleaned up); raises TimeoutError when the
    drain does not finish in ``timeout_s``. ``route_sessions=False`` gives every consumer None."""
    ctx = multiprocessing.get_context("spawn")
    target.prepare()
    names = [f"s{i}" for i in range(sessions)]
    producer = target.open()
    try:
        started = time.perf_counter()
        for i in range(messages):
            producer.enqueue(names[i % sessions], json.dumps({"i": i, "pad": "x" * 200}))
        enqueue_s = time.perf_counter() - started

        ready, go, stop, results = ctx.Semaphore(0), ctx.Event(), ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(
                target=_consumer,
                args=(target, names[k::consumers] if route_sessions else None, ready, go, stop),
                kwargs={"results": results},
                daemon=True,
            )
            for k in range(consumers)
        ]
        for proc in procs:
            proc.start()
        try:
            for _ in procs:
                if not ready.acquire(timeout=READY_TIMEOUT_S):
                    raise TimeoutError(f"{target.name}: a consumer did not open in time")
            started = time.perf_counter()
            go.set()
            deadline = started + timeout_s
            while producer.pending() > 0:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{target.name}: not drained within {timeout_s:.0f} s")
                time.sleep(0.005)
            drain_s = time.perf_counter() - started
            stop.set()
            deliveries = [item for _ in procs for item in results.get(timeout=60)]
        finally:
            stop.set()
            go.set()
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
    finally:
        producer.close()
    return DrainCheck(
        target.name,
        messages,
        sessions,
        consumers,
        messages / enqueue_s,
        messages / drain_s,
        deliveries,
    )
