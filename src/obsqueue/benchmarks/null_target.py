"""The harness's own references: a null target (its ceiling) and one with a known delay.

``NullTarget`` stores nothing durable: producers put messages on ``multiprocessing`` queues,
``SHARDS`` of them, a session's shard being its number modulo ``SHARDS`` (the harness gives
consumer ``i`` of ``n`` the sessions ``i, i+n, …``, so with 1, 2, 4 or 8 consumers no two read
one queue), and each consumer reads the shards of its sessions, a thread per shard. Its figures
are what the harness itself costs (spawned processes, payload stamping, histograms).
``DelayTarget`` is the same with every message held back
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
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession, WorkloadTarget

__all__ = ["DelayTarget", "NullTarget"]

NOTHING = Guarantees(False, False, False, False, False, ("in-memory, nothing stored",))
SHARDS = 8


def shard_of(session_id: str) -> int:
    digits = session_id.lstrip("abcdefghijklmnopqrstuvwxyz")
    return int(digits) % SHARDS if digits.isdigit() else zlib.crc32(session_id.encode()) % SHARDS


@dataclass(frozen=True)
class NullTarget(WorkloadTarget):
    """One shared in-memory queue: the cost of the harness with no queue engine in it."""

    name: ClassVar[str] = "null"
    kind: ClassVar[str] = "null"
    backend: ClassVar[str] = "memory"
    guarantees: ClassVar[Guarantees] = NOTHING

    def prepare(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.options["queues"] = [ctx.Queue() for _ in range(SHARDS)]
        self.options["pending"] = ctx.Value("q", 0)

    def open(self) -> TargetSession:
        if "queues" not in self.options:
            raise RuntimeError(f"{self.name}: prepare() must run before the workers are spawned")
        delay_s = float(self.options.get("delay_ms", 0.0)) / 1000
        return NullSession(self.options["queues"], self.options["pending"], delay_s)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "delay_ms": float(self.options.get("delay_ms", 0.0))}


@dataclass(frozen=True)
class DelayTarget(NullTarget):
    """The null target with each message delivered ``options["delay_ms"]`` after its enqueue."""

    name: ClassVar[str] = "delay"


class NullSession(TargetSession):
    def __init__(self, queues: list[Any], pending: Any, delay_s: float) -> None:
        self.queues, self.counter, self.delay_s = queues, pending, delay_s

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        with self.counter.get_lock():
            self.counter.value += 1
        self.queues[shard_of(session_id)].put((time.monotonic(), session_id, payload))

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        shards = sorted({shard_of(s) for s in sessions}) if sessions else range(SHARDS)
        threads = [
            threading.Thread(target=self._drain, args=(self.queues[i], on_message, stop))
            for i in shards
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _drain(self, source: Any, on_message: OnMessage, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                enqueued, session_id, payload = source.get(timeout=0.1)
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
