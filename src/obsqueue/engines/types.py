"""The contract's data types: messages, claims, capabilities, limits, and the dedupe key.

Every engine builds what it hands out with :func:`delivered` and :func:`stored`, so a row read
back from any backend becomes the same objects by the same conversions, and encodes the dedupe
key of ``(content_session_id, tool_use_id)`` with :func:`dedupe_field` (the Redis scripts keep
the one Lua copy of it, in ``engines/redis/lua/lib.lua``).
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "KINDS",
    "MAX_ID_CHARS",
    "MAX_PAYLOAD_BYTES",
    "MAX_TIMESTAMP_MS",
    "Capability",
    "Claim",
    "EnqueueResult",
    "MessageKind",
    "MessageStatus",
    "PendingMessage",
    "PendingMessageWithId",
    "RawMessage",
    "SessionId",
    "decode_payload",
    "dedupe_field",
    "delivered",
    "now_ms",
    "stored",
]

MessageKind = Literal["observation", "summarize"]
MessageStatus = Literal["pending", "processing", "dead"]
SessionId = str | int

KINDS: Final = frozenset({"observation", "summarize"})
MAX_PAYLOAD_BYTES: Final = 8 * 1024 * 1024
MAX_ID_CHARS: Final = 512
MAX_TIMESTAMP_MS: Final = 2**53 - 1


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Capability(enum.StrEnum):
    """What an engine declares it holds. A property whose capability is not declared is
    reported *unsupported* for that engine; declaring one the engine does not hold is a failure."""

    FIFO = "fifo"  # P1 per-session FIFO
    EXCLUSIVE_SESSION = "exclusive_session"  # P2 one consumer per session
    DEDUPE = "dedupe"  # P3
    MULTI_PROCESS = "multi_process"  # the queue is shared by processes (P2/P3 across processes)
    DURABLE_ENQUEUE = "durable_enqueue"  # P4 survives SIGKILL of every client process
    SERVER_CRASH_DURABLE = "server_crash_durable"  # P4/P5 survive kill -9 + restart of the server
    DURABLE_PROCESSING = "durable_processing"  # P5
    STARTUP_RECOVERY = "startup_recovery"  # P6
    STALL_RECOVERY = "stall_recovery"  # P7
    FENCING = "fencing"  # P8
    FAST_WAKEUP = "fast_wakeup"  # P9 p99 below 1 s
    FIDELITY = "fidelity"  # P10
    DEPTH = "depth"  # P11
    CLEAR = "clear"  # P12
    STOP_AND_IDLE = "stop_and_idle"  # P13
    INPUT_VALIDATION = "input_validation"  # P14
    BOUNDED_RETRIES = "bounded_retries"  # P15
    CLOSE = "close"  # P16


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """One observation (or summarize request) as the producer hands it in."""

    kind: MessageKind
    tool_use_id: str | None = None
    payload: Any = field(default_factory=dict)
    original_timestamp: int = field(default_factory=now_ms)


@dataclass(frozen=True, slots=True)
class Claim:
    """The claim a message was delivered under: a fencing token and the lease's end."""

    token: int
    lease_expires_at_ms: int
    consumer_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingMessageWithId(PendingMessage):
    """A delivered message: the message plus its id, session, attempt and claim."""

    id: int
    session_id: str
    content_session_id: str
    attempt: int = 1
    claim: Claim | None = None
    enqueued_at_ms: int | None = None

    def message(self) -> PendingMessage:
        """The message as it was enqueued."""
        return PendingMessage(self.kind, self.tool_use_id, self.payload, self.original_timestamp)


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What enqueue returns: the message id, and whether it was a duplicate of a queued one."""

    message_id: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A stored message as the backdoor oracle (``inspect_raw``) reads it, bypassing the API."""

    id: int
    session_id: str
    content_session_id: str
    kind: str
    tool_use_id: str | None
    payload: Any
    original_timestamp: int
    status: MessageStatus
    attempt: int
    claim_token: int | None = None
    lease_expires_at_ms: int | None = None
    last_error: str | None = None


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
