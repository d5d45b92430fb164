"""The ``drain`` workload: one session preloaded with N messages, drained by one consumer.

It measures what a single session's stream costs on an engine, closed loop, in one process:

* ``enqueue_per_s`` — N enqueues one after the other (each returns only once it is stored);
* ``drained_per_s`` — the consumer's ``create_iterator`` + ``mark_processed`` loop over the N;
* ``service_time`` — percentiles of the time from one delivery to the next (ack + claim).

The same N messages are then pushed through the raw backend (``references.py``) in the same
run, and the result carries the ratio. Durability settings come from ``engine.describe()``, so a
figure is never read without the guarantee it was measured under.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from obsqueue.benchmarks.references import reference_for
from obsqueue.benchmarks.stats import percentiles
from obsqueue.engines import open_engine
from obsqueue.engines.base import PendingMessage
from obsqueue.errors import InvalidMessageError

__all__ = ["DrainWorkload", "run_drain"]

SESSION = "bench-session"
CONTENT_SESSION = "bench-content"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DrainWorkload:
    """How many messages, of what size."""

    messages: int = 2000
    payload_bytes: int = 256
    idle_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.messages, int) or self.messages < 1:
            raise InvalidMessageError("messages", f"must be an int >= 1, got {self.messages!r}")
        if not isinstance(self.payload_bytes, int) or self.payload_bytes < 0:
            raise InvalidMessageError(
                "payload_bytes", f"must be an int >= 0, got {self.payload_bytes!r}"
            )

    def payload(self, i: int) -> dict[str, Any]:
        return {"i": i, "blob": "x" * self.payload_bytes}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": "drain",
            "sessions": 1,
            "consumers": 1,
            "messages": self.messages,
            "payload_bytes": self.payload_bytes,
        }


def run_drain(
    url: str,
    workload: DrainWorkload,
    *,
    server_url: str | None = None,
    progress: Progress = lambda _line: None,
    **options: Any,
) -> dict[str, Any]:
    """Measure ``url`` (an engine URL that names its store) on ``workload``, then its raw
    reference; ``server_url`` is the bare server URL the reference talks to."""
    namespace = f"b{uuid.uuid4().hex[:10]}"
    with open_engine(url, namespace=namespace, **options) as engine:
        description = engine.describe()
        try:
            progress(f"{url}: enqueueing {workload.messages} messages")
            enqueue_s = _timed(
                lambda: [
                    engine.enqueue(SESSION, CONTENT_SESSION, _message(workload, i))
                    for i in range(workload.messages)
                ]
            )
            progress(f"{url}: draining")
            drain_s, gaps = _drain(engine, workload, progress)
        finally:
            engine.destroy()
    result: dict[str, Any] = {
        "engine": engine.scheme or type(engine).__name__,
        "url": _display(url),
        "workload": workload.to_json(),
        "describe": description,
        "figures": {
            "enqueue_per_s": round(workload.messages / enqueue_s, 1),
            "drained_per_s": round(workload.messages / drain_s, 1),
            "service_time": percentiles(gaps),
        },
    }
    reference = reference_for(url, server_url)
    if reference is not None:
        progress(f"{url}: raw reference {reference.name}")
        raw = reference.run(workload.messages, workload.payload(0))
        result["reference"] = raw
        result["figures"]["drained_vs_reference"] = round(
            result["figures"]["drained_per_s"] / raw["drained_per_s"], 3
        )
    return result


def _message(workload: DrainWorkload, i: int) -> PendingMessage:
    return PendingMessage("observation", None, workload.payload(i))


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _drain(engine: Any, workload: DrainWorkload, progress: Progress) -> tuple[float, list[float]]:
    stop = threading.Event()
    gaps: list[float] = []
    step = max(1, workload.messages // 10)
    start = last = time.perf_counter()
    got = 0
    for msg in engine.create_iterator(SESSION, stop=stop, idle_timeout=workload.idle_timeout_s):
        engine.mark_processed(msg)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        got += 1
        if got % step == 0:
            progress(f"  drained {got}/{workload.messages}")
        if got == workload.messages:
            break
    elapsed = time.perf_counter() - start
    if got != workload.messages:
        raise RuntimeError(
            f"drained {got} of {workload.messages} messages before the iterator went idle for "
            f"{workload.idle_timeout_s} s: the engine lost messages or stopped waking up"
        )
    return elapsed, gaps


def _display(url: str) -> str:
    from obsqueue.errors import redact_url

    return redact_url(url)
