"""An obsqueue engine as a ``WorkloadTarget``, opened by URL through the registry only.

Each consumer process runs one thread per session it was given, each driving
``create_iterator`` + ``mark_processed`` — one consumer per session, as the contract intends.
``delivered`` is reported when the iterator yields (before the ack), ``on_message`` after
``mark_processed`` returns.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession, WorkloadTarget
from obsqueue.engines import engine_class, open_engine
from obsqueue.engines.base import Capability, ObservationQueueEngine, PendingMessage
from obsqueue.errors import redact_url

__all__ = ["EngineTarget", "engine_guarantees"]

CONTENT_SESSION = "bench-content"


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
        if sessions is None:
            raise ValueError("an obsqueue engine is consumed per session: pass the session ids")
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=self._drain, args=(sid, on_message, stop, errors), daemon=True)
            for sid in sessions
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def _drain(
        self, sid: str, on_message: OnMessage, stop: threading.Event, errors: list[BaseException]
    ) -> None:
        try:
            for msg in self.engine.create_iterator(sid, stop=stop):
                self.delivered(msg.payload)
                self.engine.mark_processed(msg)
                on_message(sid, msg.payload)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def pending(self) -> int:
        return self.engine.get_total_queue_depth()

    def close(self) -> None:
        self.engine.close()
