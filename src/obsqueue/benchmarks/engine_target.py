"""An obsqueue engine as a ``WorkloadTarget``, opened by URL through the registry only.

A consumer process given one session drives ``create_iterator`` + ``mark_processed`` on it (the
hand-off path: the ack claims the next head). Given several, it serves them from a few threads
(``SERVER_LANES`` for a server engine, one for an embedded file), each with
``create_multi_session_iterator`` over its share — one consumer per session still, held by the
claims — so a scaling point of 1,000 sessions runs on 4 threads, not 1,000.
``delivered`` is reported when the iterator yields (before the ack), ``on_message`` after
``mark_processed`` returns.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession, WorkloadTarget
from obsqueue.engines import engine_class, open_engine
from obsqueue.engines.base import (
    Capability,
    ObservationQueueEngine,
    PendingMessage,
    PendingMessageWithId,
)
from obsqueue.errors import redact_url

__all__ = ["EngineTarget", "engine_guarantees"]

CONTENT_SESSION = "bench-content"
#: Threads per consumer process given several sessions, each serving its share of them with
#: the many-session iterator: for a server engine a few requests in flight at once (its group
#: commit, as a real consumer with a small worker pool has), not one thread per session; for an
#: embedded file engine one, since its file has one writer at a time.
SERVER_LANES = 4


def engine_guarantees(url: str) -> Guarantees:
    """What the engine at ``url`` declares, in the terms every target is described in."""
    caps = engine_class(url).capabilities
    return Guarantees(
        per_session_fifo=Capability.FIFO in caps,
        one_consumer_per_session=Capability.EXCLUSIVE_SESSION in caps,
        ack_after_processing=True,
        survives_consumer_kill=Capability.STALL_RECOVERY in caps,
        dedupe=Capability.DEDUPE in caps,
    )


@dataclass(frozen=True)
class EngineTarget(WorkloadTarget):
    """The engine at ``address`` (an openable engine URL) under ``namespace``."""

    name: ClassVar[str] = "obsqueue"
    kind: ClassVar[str] = "engine"
    backend: ClassVar[str] = "obsqueue"
    guarantees: ClassVar[Guarantees] = Guarantees(True, True, True, True, True)

    def _open(self) -> ObservationQueueEngine:
        return open_engine(self.address, namespace=self.namespace, **self.options)

    def prepare(self) -> None:
        with self._open() as engine:
            engine.destroy()

    def cleanup(self) -> None:
        self.prepare()

    def open(self) -> TargetSession:
        return EngineSession(self._open())

    def describe(self) -> dict[str, Any]:
        with self._open() as engine:
            described = engine.describe()
        return {
            **super().describe(),
            "url": redact_url(self.address),
            "weaker": engine_guarantees(self.address).weaker_than_obsqueue(),
            "engine": described,
        }


class EngineSession(TargetSession):
    """One process's engine: enqueue from producers, a thread per session in consumers."""

    def __init__(self, engine: ObservationQueueEngine) -> None:
        self.engine = engine

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        self.engine.enqueue(
            session_id, CONTENT_SESSION, PendingMessage("observation", dedupe_key, payload)
        )

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        if sessions is not None and len(sessions) == 1:
            self._drain(self.engine.create_iterator(sessions[0], stop=stop), on_message, stop)
            return
        count = 1 if type(self.engine).server_kind is None else SERVER_LANES
        lanes = [None] if sessions is None else [sessions[i::count] for i in range(count)]
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=self._lane, args=(lane, on_message, stop, errors), daemon=True)
            for lane in lanes
            if lane is None or lane
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def _lane(
        self,
        sessions: Sequence[str] | None,
        on_message: OnMessage,
        stop: threading.Event,
        errors: list[BaseException],
    ) -> None:
        try:
            messages = self.engine.create_multi_session_iterator(sessions, stop=stop)
            self._drain(messages, on_message, stop)
        except BaseException as exc:
            errors.append(exc)

    def _drain(
        self, messages: Iterator[PendingMessageWithId], on_message: OnMessage, stop: threading.Event
    ) -> None:
        try:
            for msg in messages:
                self.delivered(msg.payload)
                self.engine.mark_processed(msg)
                on_message(msg.session_id, msg.payload)
        except BaseException:
            stop.set()
            raise

    def pending(self) -> int:
        return self.engine.get_total_queue_depth()

    def close(self) -> None:
        self.engine.close()
