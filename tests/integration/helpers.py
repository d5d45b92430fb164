"""Helpers of the integration tier: the suite's child processes, and wakeup latency across
connections, for the engine-specific tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from obsqueue.conformance.faults import Child, start_child
from obsqueue.conformance.spec import EngineSpec
from obsqueue.engines.base import ObservationQueueEngine, PendingMessage, PendingMessageWithId
from obsqueue.servers import ServerUnavailableError
from obsqueue.servers.containers import docker_engine


@contextlib.contextmanager
def child(role: str, spec: EngineSpec, history: Path, name: str, **config: Any) -> Iterator[Child]:
    """``conformance.faults.start_child``, and its stdout pipe closed afterwards (``Child`` leaves
    it to the garbage collector, which ``filterwarnings = error`` turns into a failure)."""
    started = start_child(role, spec, history, name, **config)
    try:
        with started:
            yield started
    finally:
        if started.process.stdout is not None:
            started.process.stdout.close()


def wake_latencies(
    producer: ObservationQueueEngine,
    consumer: ObservationQueueEngine,
    count: int = 20,
    *,
    sessions: list[str] | None = None,
    every: bool = False,
) -> list[float]:
    """Seconds from each enqueue on ``producer`` to its delivery by ``consumer``'s iterator,
    which blocks in a thread between messages (two engine objects: two connections). With
    ``sessions``, the enqueues go to them in turn and the consumer is a many-session iterator
    over them (``every``: over every session)."""
    latencies: list[float] = []
    stop = threading.Event()
    targets = sessions or ["s"]

    def messages() -> Iterator[PendingMessageWithId]:
        if sessions is None:
            return consumer.create_iterator("s", stop=stop)
        return consumer.create_multi_session_iterator(None if every else sessions, stop=stop)

    def consume() -> None:
        for msg in messages():
            latencies.append(time.monotonic() - msg.payload["sent"])
            consumer.mark_processed(msg)

    thread = threading.Thread(target=consume)
    thread.start()
    try:
        time.sleep(0.3)
        for i in range(count):
            time.sleep(0.05)  # let the consumer block again
            sent = time.monotonic()
            session = targets[i * 7 % len(targets)]
            producer.enqueue(session, "c", PendingMessage("observation", None, {"sent": sent}))
            deadline = sent + 10
            while len(latencies) <= i and time.monotonic() < deadline:
                time.sleep(0.002)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert len(latencies) == count, f"{count - len(latencies)} messages were not delivered"
    return latencies


def docker_reason() -> str | None:
    """None where a Docker engine answers (testcontainers can serve), else why not."""
    try:
        docker_engine()
    except ServerUnavailableError as exc:
        return str(exc)
    return None
