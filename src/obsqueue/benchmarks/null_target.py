"""The harness's own references: a null target (its ceiling) and one with a known delay.

``NullTarget`` stores nothing durable: producers put messages on one ``multiprocessing`` queue
that every consumer reads, so its figures are what the harness itself costs (spawned processes,
payload stamping, histograms). ``DelayTarget`` is the same with every message held back
``delay_ms`` after its enqueue (pipelined, so the delay adds latency and takes no throughput):
its ``latency`` p50 must read back that delay. Both are for the self-checks, never a result's
ceiling. ``prepare`` must run in the parent before the target is handed to the worker processes
(the queue travels with it when the processes are spawned).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession, WorkloadTarget

__all__ = ["DelayTarget", "NullTarget"]

NOTHING = Guarantees(False, False, False, False, False, ("in-memory, nothing stored",))


@dataclass(frozen=True)
class NullTarget(WorkloadTarget):
    """One shared in-memory queue: the cost of the harness with no queue engine in it."""

    name: ClassVar[str] = "null"
    kind: ClassVar[str] = "null"
    backend: ClassVar[str] = "memory"
    guarantees: ClassVar[Guarantees] = NOTHING

    def prepare(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.options["queue"] = ctx.Queue()
        self.options["pending"] = ctx.Value("q", 0)

    def open(self) -> TargetSession:
        if "queue" not in self.options:
            raise RuntimeError(f"{self.name}: prepare() must run before the workers are spawned")
        delay_s = float(self.options.get("delay_ms", 0.0)) / 1000
        return NullSession(self.options["queue"], self.options["pending"], delay_s)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "delay_ms": float(self.options.get("delay_ms", 0.0))}


@dataclass(frozen=True)
class DelayTarget(NullTarget):
    """The null target with each message delivered ``options["delay_ms"]`` after its enqueue."""

    name: ClassVar[str] = "delay"


class NullSession(TargetSession):
    def __init__(self, q: Any, pending: Any, delay_s: float) -> None:
        self.queue, self.counter, self.delay_s = q, pending, delay_s

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        with self.counter.get_lock():
            self.counter.value += 1
        self.queue.put((time.monotonic(), session_id, payload))

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        while not stop.is_set():
            try:
                enqueued, session_id, payload = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self.delivered(payload)
            wait = enqueued + self.delay_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self.counter.get_lock():
                self.counter.value -= 1
            on_message(session_id, payload)

    def pending(self) -> int:
        return int(self.counter.value)
