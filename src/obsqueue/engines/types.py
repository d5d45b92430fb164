"""The contract's data types: messages, claims, capabilities and limits."""

from __future__ import annotations

import enum
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
    "now_ms",
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
    # the engine's durable configuration survives an OS crash / power loss (fsync before the
    # reply); the suite cannot crash the OS, so results report it from configuration, untested
    OS_CRASH_DURABLE = "os_crash_durable"
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
