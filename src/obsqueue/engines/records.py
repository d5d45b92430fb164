"""From what a backend stores to the contract's objects, and the one encoding of a dedupe key.

Every engine builds what it hands out with :func:`delivered` and :func:`stored`, so a row read
back from any backend becomes the same objects by the same conversions, and keys dedupe on
``(content_session_id, tool_use_id)`` with :func:`dedupe_field` (the Redis scripts keep the one
Lua copy of it, in ``engines/redis/lua/lib.lua``).
"""

from __future__ import annotations

import json
from typing import Any

from obsqueue.engines.types import Claim, PendingMessageWithId, RawMessage

__all__ = ["decode_payload", "dedupe_field", "delivered", "stored"]


def dedupe_field(content_session_id: str, tool_use_id: str) -> str:
    """The one encoding of a dedupe key: length-prefixed, so no two pairs collide."""
    return f"{len(content_session_id)}:{content_session_id}{tool_use_id}"


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def decode_payload(text: str | bytes) -> Any:
    """Parse a payload stored by ``encode_message``."""
    return json.loads(text)


def _payload(value: Any, decoded: bool) -> Any:
    return value if decoded else decode_payload(value)


def delivered(
    message_id: Any,
    session_id: str,
    content_session_id: str,
    kind: Any,
    tool_use_id: str | None,
    payload: Any,
    original_timestamp: Any,
    attempt: Any,
    claim: tuple[Any, Any, Any],
    enqueued_at_ms: Any,
    *,
    decoded: bool = False,
) -> PendingMessageWithId:
    """A delivered message from stored fields; ``payload`` is JSON text unless ``decoded``, and
    ``claim`` is ``(token, lease end in ms, consumer id or None)``."""
    token, lease_ms, consumer = claim
    return PendingMessageWithId(
        kind=kind,
        tool_use_id=tool_use_id,
        payload=_payload(payload, decoded),
        original_timestamp=int(original_timestamp),
        id=int(message_id),
        session_id=session_id,
        content_session_id=content_session_id,
        attempt=int(attempt),
        claim=Claim(int(token), int(lease_ms), consumer or ""),
        enqueued_at_ms=_int(enqueued_at_ms),
    )


def stored(
    message_id: Any,
    session_id: str,
    content_session_id: str,
    kind: str,
    tool_use_id: str | None,
    payload: Any,
    original_timestamp: Any,
    status: Any,
    attempt: Any,
    claim: tuple[Any, Any] = (None, None),
    last_error: str | bytes | None = None,
    *,
    decoded: bool = False,
) -> RawMessage:
    """What the oracle reads, from stored fields; ``payload`` is JSON text unless ``decoded``,
    ``claim`` is ``(token, lease end in ms)``, both None when the message is not held."""
    token, lease_ms = claim
    return RawMessage(
        id=int(message_id),
        session_id=session_id,
        content_session_id=content_session_id,
        kind=kind,
        tool_use_id=tool_use_id,
        payload=_payload(payload, decoded),
        original_timestamp=int(original_timestamp),
        status=status,
        attempt=int(attempt or 0),
        claim_token=_int(token),
        lease_expires_at_ms=_int(lease_ms),
        last_error=last_error.decode() if isinstance(last_error, bytes) else last_error,
    )
