"""Task functions that library workers (RQ, Dramatiq, Huey) import by dotted path.

Adapters store observations as the library's own jobs/messages/tasks naming one of these
functions, exactly as the library's users do. obsqueue's consumers pull those jobs through the
engine contract instead of running a library worker, so the functions only need to be importable.
"""

from __future__ import annotations

from typing import Any

from obsqueue.engines.base import PendingMessage

__all__ = ["observation_envelope", "record_observation"]


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


def record_observation(envelope: dict[str, Any]) -> dict[str, Any]:
    """What a library worker would run for one observation: here, hand the envelope back."""
    return envelope
