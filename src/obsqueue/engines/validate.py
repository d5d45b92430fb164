"""Validation of what callers hand in: session ids, content session ids and messages.

Each check raises ``InvalidMessageError`` naming the field, before anything is written (P14).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from obsqueue.engines.types import (
    KINDS,
    MAX_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_TIMESTAMP_MS,
    PendingMessage,
    PendingMessageWithId,
)
from obsqueue.errors import InvalidMessageError

__all__ = [
    "encode_message",
    "normalize_session_id",
    "normalize_session_ids",
    "require_delivered",
    "validate_content_session_id",
]


def require_id_text(name: str, value: object) -> str:
    """An id as text: a non-blank str of at most ``MAX_ID_CHARS``, no NUL, valid UTF-8."""
    if not isinstance(value, str):
        raise InvalidMessageError(name, f"must be a str, got {type(value).__name__}")
    if not value.strip():
        raise InvalidMessageError(name, "must not be empty or blank")
    if len(value) > MAX_ID_CHARS:
        raise InvalidMessageError(name, f"must be at most {MAX_ID_CHARS} characters")
    if "\x00" in value:
        raise InvalidMessageError(name, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessageError(name, "contains a lone surrogate, which is not UTF-8") from None
    return value


def normalize_session_id(session_id: object) -> str:
    """Return the session id as ``str``; ints are accepted and normalised."""
    if isinstance(session_id, bool) or not isinstance(session_id, str | int):
        raise InvalidMessageError(
            "session_id", f"must be a str or int, got {type(session_id).__name__}"
        )
    return require_id_text("session_id", str(session_id))


def normalize_session_ids(session_ids: object) -> tuple[str, ...] | None:
    """A set of session ids for the many-session iterator, normalised, in order, without
    repeats; None stays None (every session). A lone id or an empty set is refused."""
    if session_ids is None:
        return None
    if isinstance(session_ids, str | bytes | int):
        raise InvalidMessageError(
            "session_ids", "must be an iterable of session ids, not one id: use [id]"
        )
    if not isinstance(session_ids, Iterable):
        raise InvalidMessageError(
            "session_ids", f"must be an iterable of session ids, got {type(session_ids).__name__}"
        )
    ids = tuple(dict.fromkeys(normalize_session_id(s) for s in session_ids))
    if not ids:
        raise InvalidMessageError(
            "session_ids", "is empty: give at least one session id, or None for every one"
        )
    return ids


def validate_content_session_id(content_session_id: object) -> str:
    """Check the content session id (the dedupe scope)."""
    return require_id_text("content_session_id", content_session_id)


def require_delivered(msg: object) -> None:
    """``msg`` must be a message an engine's iterator delivered (it carries a claim)."""
    if not isinstance(msg, PendingMessageWithId) or msg.claim is None:
        raise InvalidMessageError(
            "msg", "must be a PendingMessageWithId delivered by this engine's iterator"
        )


def encode_message(message: object) -> str:
    """Validate a ``PendingMessage`` and return its payload as compact JSON text.

    Raises ``InvalidMessageError`` naming the field when anything would not round-trip exactly.
    """
    if not isinstance(message, PendingMessage):
        raise InvalidMessageError(
            "message", f"must be a PendingMessage, got {type(message).__name__}"
        )
    if message.kind not in KINDS:
        raise InvalidMessageError("kind", f"must be one of {sorted(KINDS)}, got {message.kind!r}")
    if message.tool_use_id is not None:
        require_id_text("tool_use_id", message.tool_use_id)
    ts = message.original_timestamp
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_TIMESTAMP_MS:
        raise InvalidMessageError(
            "original_timestamp", f"must be epoch milliseconds as an int >= 0, got {ts!r}"
        )
    return _encode_payload(message.payload)


def _encode_payload(payload: object) -> str:
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidMessageError("payload", f"must be JSON-serialisable: {exc}") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidMessageError(
            "payload", "contains a lone surrogate, which no backend can store as UTF-8"
        ) from None
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidMessageError(
            "payload", f"is {size} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}"
        )
    if json.loads(text) != payload:
        raise InvalidMessageError(
            "payload",
            "would not round-trip through JSON exactly (non-str keys, tuples, or subclasses): "
            "pass plain dicts with str keys, lists, str, int, float, bool and None",
        )
    return text
