"""Dramatiq used directly on Redis, as its users run it: a ``RedisBroker``; an actor over
``record`` bound to it (``dramatiq.actor(record, broker=…, queue_name=…)``); ``actor.send``
enqueues; in each consumer process a ``dramatiq.Worker`` with one worker thread, started and
stopped in process (what ``dramatiq`` the command runs in each of its processes). The broker
keeps its default middleware; one more reports ``delivered`` in ``before_process_message`` (the
worker thread, before the actor runs) and calls the harness's ``on_message`` in ``after_ack``,
once Dramatiq has acknowledged the message.

What Dramatiq gives: a message stays in the broker (``<ns>:<queue>.msgs``) until it is acked after
the actor returns; a SIGKILLed worker's unacked messages go back to the queue once its heartbeat
is older than ``heartbeat_timeout`` (60 s) — at least once. No sessions (a consumer takes any
session's message; prefetch hands several to one worker), no dedupe. Durability is the server's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.peers.base import RedisTarget, holding
from obsqueue.benchmarks.peers.raw_redis import unlink_prefix
from obsqueue.benchmarks.peers.tasks import record
from obsqueue.benchmarks.targets import Guarantees, OnDelivered, OnMessage, TargetSession

__all__ = ["DramatiqTarget"]


def _acked_middleware() -> Any:
    import dramatiq

    class AckedMiddleware(dramatiq.Middleware):
        """Reports each acknowledged message to the harness (in the worker's consumer thread)."""

        on_message: OnMessage | None = None
        on_delivered: OnDelivered | None = None

        def before_process_message(self, broker: Any, message: Any) -> None:
            if self.on_delivered is not None:
                self.on_delivered(message.args[1])

        def after_ack(self, broker: Any, message: Any) -> None:
            if self.on_message is not None:
                self.on_message(*message.args)

    return AckedMiddleware()


class _DramatiqSession(TargetSession):
    def __init__(self, target: DramatiqTarget) -> None:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        recovery: dict[str, int] = {}
        if target.recovery_s is not None:  # a dead worker's heartbeat, checked on every command
            recovery = {"heartbeat_timeout": int(target.recovery_s * 1000)}
            recovery["maintenance_chance"] = 1_000_000
        self._broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=target.address, namespace=target.redis_namespace, **recovery
        )
        self._acked = _acked_middleware()
        self._broker.add_middleware(self._acked)
        self._actor = dramatiq.actor(
            broker=self._broker, queue_name=target.queue_name, actor_name="record"
        )(record)
        self._queue_name = target.queue_name

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        self._actor.send(session_id, payload)

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        import dramatiq

        self._acked.on_message, self._acked.on_delivered = on_message, self.delivered
        worker = dramatiq.Worker(self._broker, worker_threads=1, worker_timeout=100)
        worker.start()
        try:
            stop.wait()
        finally:
            worker.stop()
            self._acked.on_message = self._acked.on_delivered = None

    def pending(self) -> int:
        client = self._broker.client
        ns, queue = self._broker.namespace, self._queue_name
        return int(client.hlen(f"{ns}:{queue}.msgs")) + int(client.hlen(f"{ns}:{queue}.DQ.msgs"))

    def close(self) -> None:
        self._broker.close()


@dataclass(frozen=True)
class DramatiqTarget(RedisTarget):
    """Dramatiq's RedisBroker at ``address``; keys under ``obsq-<namespace>-dramatiq:``."""

    name: ClassVar[str] = "dramatiq"
    libraries: ClassVar[tuple[str, ...]] = ("dramatiq", "redis")
    guarantees: ClassVar[Guarantees] = holding(
        "ack_after_processing",
        "survives_consumer_kill",
        notes=(
            "Dramatiq: RedisBroker, an actor over record, actor.send; dramatiq.Worker "
            "(1 thread) in the consumer process",
            "a consumer takes any session's message (Dramatiq has no sessions)",
            "a killed worker's messages are requeued after heartbeat_timeout (60 s)",
        ),
    )

    @property
    def queue_name(self) -> str:
        return f"obsq-{self.namespace}"

    @property
    def redis_namespace(self) -> str:
        return f"obsq-{self.namespace}-dramatiq"

    def prepare(self) -> None:
        with self.redis_client() as client:
            unlink_prefix(client, f"{self.redis_namespace}:")

    def session(self) -> TargetSession:
        return _DramatiqSession(self)

    def cleanup(self) -> None:
        self.prepare()
