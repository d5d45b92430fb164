"""Dramatiq's RabbitMQ broker as the dramatiq+amqp adapter uses it: a queue argument added, and
two reads RabbitMQ answers without its management plugin (a queue's count, its ready messages).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker

__all__ = ["SingleActiveBroker", "message_count", "snapshot"]


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
