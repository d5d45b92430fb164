"""Task functions that library workers (RQ, Dramatiq, Huey) import by dotted path.

Adapters store observations as the library's own jobs/messages/tasks naming one of these
functions, exactly as the library's users do. obsqueue's consumers pull those jobs through the
engine contract instead of running a library worker, so the functions only need to be importable.
"""

from __future__ import annotations

from typing import Any

from obsqueue.engines.records import delivered, stored
from obsqueue.engines.types import PendingMessage, PendingMessageWithId, RawMessage

__all__ = ["delivered_envelope", "observation_envelope", "record_observation", "stored_envelope"]


def observation_envelope(
    session_id: str, content_session_id: str, message: PendingMessage
) -> dict[str, Any]:
    """The argument of ``record_observation`` as the RQ and Dramatiq adapters enqueue it."""
    return {
        "session_id": session_id,
        "content_session_id": content_session_id,
        "kind": message.kind,
        "tool_use_id": message.tool_use_id,
        "payload": message.payload,
        "original_timestamp": message.original_timestamp,
    }


def delivered_envelope(
    env: dict[str, Any],
    message_id: Any,
    attempt: Any,
    claim: tuple[Any, Any, Any],
    enqueued_at_ms: Any,
) -> PendingMessageWithId:
    """A delivered message from an envelope made by ``observation_envelope``."""
    fields = env["session_id"], env["content_session_id"], env["kind"], env["tool_use_id"]
    payload, ts = env["payload"], env["original_timestamp"]
    return delivered(message_id, *fields, payload, ts, attempt, claim, enqueued_at_ms, decoded=True)


def stored_envelope(
    env: dict[str, Any],
    message_id: Any,
    status: Any,
    attempt: Any,
    claim: tuple[Any, Any] = (None, None),
    last_error: str | bytes | None = None,
) -> RawMessage:
    """What the oracle reads, from an envelope made by ``observation_envelope``."""
    fields = env["session_id"], env["content_session_id"], env["kind"], env["tool_use_id"]
    payload, ts = env["payload"], env["original_timestamp"]
    return stored(
        message_id, *fields, payload, ts, status, attempt, claim, last_error, decoded=True
    )


def record_observation(envelope: dict[str, Any]) -> dict[str, Any]:
    """What a library worker would run for one observation: here, hand the envelope back."""
    return envelope
