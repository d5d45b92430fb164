"""The Dramatiq queue of a session, on either broker (imports no broker's driver).

A session id becomes a queue name ``s_<id>`` when it is a safe Dramatiq queue name, else
``x_<utf-8 hex>`` (injective; never a dot, which Dramatiq's key layout uses).
"""

from __future__ import annotations

__all__ = ["amqp_queue_name", "queue_name"]

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
