"""A closed-loop check of one target: enqueue N messages over S sessions, then drain them with C
consumer processes — every message delivered, and (for a target that claims it) each session in
order. The integration tests and ``python -m obsqueue.benchmarks.peers`` run it; the harness's
workloads are the measurement, this is the quick look (enqueue/s and drained/s of one pass).

Consumers are separate processes (``spawn``), each opening its own session and given every C-th
session; the drain is timed from the moment they are told to start until ``pending()`` reads 0
in the parent. Deliveries carry ``time.monotonic()`` (one clock for every process on Linux), so
per-session order is judged across consumers. Each consumer also records, per message, the order
of its two hooks: ``delivered`` (``TargetSession.delivered``, before the ack) must come once and
then ``on_message`` once, in the same consumer.
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
    """What one pass saw: rates; every delivery as ``(monotonic_s, session, seq)``; and, per
    consumer, its hooks in the order they were called: ``("delivered" | "processed", seq)``."""

    target: str
    messages: int
    sessions: int
    consumers: int
    enqueue_per_s: float
    drained_per_s: float
    deliveries: list[tuple[float, str, int]] = field(default_factory=list)
    hooks: list[list[tuple[str, int]]] = field(default_factory=list)
    given: list[list[str] | None] = field(default_factory=list)  # each consumer's sessions
    taken: list[set[str]] = field(default_factory=list)  # the sessions each one processed

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

    def hook_faults(self) -> dict[int, list[str]]:
        """Messages whose hooks were not ``delivered`` then ``processed``, once each, in one
        consumer: ``{seq: [hook, …]}`` (every hook of it, in every consumer)."""
        calls: dict[int, list[str]] = defaultdict(list)
        for hooks in self.hooks:
            for hook, seq in hooks:
                calls[seq].append(hook)
        each = {seq: calls.get(seq, []) for seq in range(self.messages)}
        return {seq: got for seq, got in each.items() if got != ["delivered", "processed"]}

    def strays(self) -> int:
        """Sessions a consumer processed though it was not given them."""
        return sum(
            len(taken - set(given))
            for given, taken in zip(self.given, self.taken, strict=True)
            if given is not None
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
            "hook_faults": len(self.hook_faults()),
            "stray_sessions": self.strays(),
        }


def _consumer(
    index: int,
    target: WorkloadTarget,
    sessions: list[str] | None,
    ready: Any,
    go: Event,
    stop: Any,
    results: Any,
) -> None:
    seen: list[tuple[float, str, int]] = []
    hooks: list[tuple[str, int]] = []  # list.append is atomic: hooks may run on other threads

    def on_delivered(payload: str) -> None:
        hooks.append(("delivered", int(json.loads(payload)["i"])))

    def on_message(session_id: str, payload: str) -> None:
        seq = int(json.loads(payload)["i"])
        hooks.append(("processed", seq))
        seen.append((time.monotonic(), session_id, seq))

    session = target.open()
    session.on_delivered = on_delivered
    try:
        ready.release()
        go.wait()
        session.consume(sessions, on_message, stop)
    finally:
        session.close()
        results.put((index, seen, hooks))


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
        given = [names[k::consumers] if route_sessions else None for k in range(consumers)]
        procs = [
            ctx.Process(
                target=_consumer,
                args=(k, target, given[k], ready, go, stop),
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
            reports = [report[1:] for report in sorted(results.get(timeout=60) for _ in procs)]
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
        deliveries=[item for seen, _ in reports for item in seen],
        hooks=[hooks for _, hooks in reports],
        given=given,
        taken=[{session for _, session, _ in seen} for seen, _ in reports],
    )
