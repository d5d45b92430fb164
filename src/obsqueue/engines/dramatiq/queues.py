"""The Dramatiq queues of sessions: their names on both brokers; on RabbitMQ, their arguments,
counts and a snapshot of their messages.

A session id becomes a queue name ``s_<id>`` when it is a safe Dramatiq queue name, else
``x_<utf-8 hex>`` (injective; never a dot, which Dramatiq's key layout uses).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker

__all__ = ["SingleActiveBroker", "amqp_queue_name", "message_count", "queue_name", "snapshot"]

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _session_queue(session_id: str, *, safe_len: int, hex_len: int | None = None) -> str:
    if len(session_id) <= safe_len and set(session_id) <= _SAFE:
        return f"s_{session_id}"
    return f"x_{session_id.encode('utf-8').hex()[:hex_len]}"


def queue_name(session_id: str) -> str:
    """The session's queue on Redis: ``s_<id>``, else ``x_<hex>``."""
    return _session_queue(session_id, safe_len=200)


def amqp_queue_name(namespace: str, session_id: str) -> str:
    """The session's queue on RabbitMQ: ``obsq-<ns>-s_<id>``, else ``obsq-<ns>-x_<hex>``
    (the hex cut at 200 characters: a queue name is at most 255 bytes)."""
    return f"obsq-{namespace}-" + _session_queue(session_id, safe_len=150, hex_len=200)


class SingleActiveBroker(RabbitmqBroker):
    """Dramatiq's broker, with ``x-single-active-consumer`` added to its queue arguments."""

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)  # type: ignore[no-untyped-call]
        arguments["x-single-active-consumer"] = True
        return arguments


def message_count(broker: RabbitmqBroker, op: Callable[[], Any]) -> int:
    """The ``message_count`` a queue method answers, or 0 when the queue does not exist
    (RabbitMQ then closes the channel, and Dramatiq opens a new one on next use)."""
    try:
        ok = op()
    except pika.exceptions.ChannelClosedByBroker as exc:
        del broker.channel
        if exc.reply_code == 404:
            return 0
        raise
    return int(ok.method.message_count)


def snapshot(broker: RabbitmqBroker, queue: str) -> list[tuple[bytes, bool]]:
    """Every ready message body of ``queue``; closing the channel requeues them in place."""
    channel = broker.connection.channel()
    bodies: list[tuple[bytes, bool]] = []
    try:
        while True:
            method, _props, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            bodies.append((body, bool(method.redelivered)))
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return []
    with contextlib.suppress(pika.exceptions.AMQPError):
        channel.close()
    return bodies
