"""The engine contract: data types, capabilities, and the abstract engine.

An engine implements a handful of primitives (``_enqueue``, ``_claim_next``, ``_mark_processed``,
...). Everything a user calls — validation, the blocking iterator with wakeup, stop and idle
handling, ``enqueue_many``, ``list_dead`` — is concrete here, built on those primitives, so every
engine behaves the same at its edges. An engine overrides a concrete method only to go faster.

The model every engine keeps (DESIGN.md §3):

* Messages of one session are ordered by id. Only the *head* of a session — its oldest message
  that is neither processed nor dead — can be claimed, so at most one message per session is ever
  in flight (P2) and deliveries come in enqueue order (P1).
* A claim carries a fencing ``token`` and a lease. A head whose lease ran out is claimed again
  with ``attempt + 1`` (P7); acknowledgements under the old token raise ``StaleClaimError`` (P8).
* ``attempt`` counts deliveries. A retry or a stall past ``max_attempts`` deliveries makes the
  message *dead*: kept and visible (``list_dead``), never delivered again (P15).
* Processed messages are deleted when acknowledged; dedupe keys are held only while pending or in
  flight (P3).
"""

from __future__ import annotations

import abc
import enum
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, Self

from obsqueue.errors import EngineClosedError, InvalidMessageError, redact_url

__all__ = [
    "KINDS",
    "MAX_PAYLOAD_BYTES",
    "Capability",
    "Claim",
    "EngineOptions",
    "EnqueueResult",
    "MessageKind",
    "MessageStatus",
    "ObservationQueueEngine",
    "PendingMessage",
    "PendingMessageWithId",
    "RawMessage",
    "SessionId",
    "decode_payload",
    "encode_message",
    "normalize_session_id",
    "now_ms",
    "validate_content_session_id",
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


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The options every engine takes, keyword-only, with units in their names."""

    lease_s: float = 30.0
    max_attempts: int = 5
    namespace: str = "obsq"
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        _require_positive("lease_s", self.lease_s)
        _require_positive("connect_timeout_s", self.connect_timeout_s)
        _require_non_negative("retry_backoff_s", self.retry_backoff_s)
        _require_non_negative("retry_backoff_max_s", self.retry_backoff_max_s)
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise InvalidMessageError("max_attempts", "must be an int of at least 1")
        if self.max_attempts < 1:
            raise InvalidMessageError(
                "max_attempts", f"must be at least 1, got {self.max_attempts}"
            )
        ns = self.namespace
        if not isinstance(ns, str) or not ns.isidentifier() or not ns.isascii() or len(ns) > 40:
            raise InvalidMessageError(
                "namespace", f"must be an ASCII identifier of at most 40 characters, got {ns!r}"
            )


def _require_positive(name: str, value: object) -> None:
    if not _is_real(value) or not value > 0:  # type: ignore[operator]
        raise InvalidMessageError(name, f"must be a positive number of seconds, got {value!r}")


def _require_non_negative(name: str, value: object) -> None:
    if not _is_real(value) or not value >= 0:  # type: ignore[operator]
        raise InvalidMessageError(name, f"must be a number of seconds >= 0, got {value!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _require_id_text(name: str, value: object) -> str:
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
    return _require_id_text("session_id", str(session_id))


def validate_content_session_id(content_session_id: object) -> str:
    """Check the content session id (the dedupe scope)."""
    return _require_id_text("content_session_id", content_session_id)


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
        _require_id_text("tool_use_id", message.tool_use_id)
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


def decode_payload(text: str | bytes) -> Any:
    """Parse a payload stored by ``encode_message``."""
    return json.loads(text)


class ObservationQueueEngine(abc.ABC):
    """The contract every engine implements. Synchronous and thread-safe.

    Subclasses set ``scheme``, ``capabilities`` and, when the engine talks to a server,
    ``server_kind`` (``"postgres"``, ``"redis"``, ``"rabbitmq"``) so the conformance suite can
    provision a throwaway server for it. ``glue`` lists what obsqueue adds on top of a library.
    """

    scheme: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    server_kind: ClassVar[str | None] = None
    glue: ClassVar[tuple[str, ...]] = ()

    #: How long one wait inside the iterator may last, so ``stop`` is seen quickly (P13).
    WAIT_SLICE_S: ClassVar[float] = 0.2

    def __init__(
        self,
        url: str,
        *,
        lease_s: float = 30.0,
        max_attempts: int = 5,
        namespace: str = "obsq",
        retry_backoff_s: float = 1.0,
        retry_backoff_max_s: float = 60.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.options = EngineOptions(
            lease_s=lease_s,
            max_attempts=max_attempts,
            namespace=namespace,
            retry_backoff_s=retry_backoff_s,
            retry_backoff_max_s=retry_backoff_max_s,
            connect_timeout_s=connect_timeout_s,
        )
        self._closed = False
        self._close_lock = threading.Lock()
        self._local_wakeup = threading.Condition()
        self._local_seq = 0

    # ----------------------------------------------------------------- primitives (abstract)

    @abc.abstractmethod
    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        """Store one validated message atomically, deduping on (content_session_id, tool_use_id)."""

    @abc.abstractmethod
    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        """Claim the session's head if it is claimable (pending and due, or lease expired)."""

    @abc.abstractmethod
    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        """Delete the message if ``msg.claim`` still holds it, else raise ``StaleClaimError``."""

    @abc.abstractmethod
    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        """Re-queue (with backoff) or kill the message if the claim holds, else StaleClaimError."""

    @abc.abstractmethod
    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        """Push the lease's end out if the claim still holds, else raise ``StaleClaimError``."""

    @abc.abstractmethod
    def _pending_count(self, session_id: str) -> int:
        """Messages of the session that are pending or in flight (not processed, not dead)."""

    @abc.abstractmethod
    def _total_depth(self) -> int:
        """Messages of every session that are pending or in flight."""

    @abc.abstractmethod
    def _clear_pending(self, session_id: str) -> int:
        """Delete the session's pending (not in-flight, not dead) messages; return how many."""

    @abc.abstractmethod
    def _reset_processing(self, session_id: str | None) -> int:
        """Return in-flight messages (of one session, or all) to pending, voiding their claims."""

    @abc.abstractmethod
    def inspect_raw(self) -> list[RawMessage]:
        """The backdoor oracle: every stored message read straight from the backend, by id."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Versions (library, client, server) and the durability configuration in force."""

    @abc.abstractmethod
    def destroy(self) -> None:
        """Delete everything this engine stored under its namespace (tests and benchmarks)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release connections and files. Called once."""

    # ------------------------------------------------------------ wakeup (override to be fast)

    def _wakeup_mark(self, session_id: str) -> object:
        """A token taken before a claim attempt; ``_wait_for_work`` returns once it changes."""
        return self._local_seq

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        """Block until new work may be there, or ``timeout_s`` passed. This default only hears
        enqueues made through this engine object; engines shared by processes override it."""
        with self._local_wakeup:
            self._local_wakeup.wait_for(lambda: self._local_seq != mark, timeout_s)

    def _notify_local(self) -> None:
        with self._local_wakeup:
            self._local_seq += 1
            self._local_wakeup.notify_all()

    # ---------------------------------------------------------------- the public interface

    def enqueue(
        self, session_id: SessionId, content_session_id: str, message: PendingMessage
    ) -> EnqueueResult:
        """Add a message to the session's queue. A second enqueue of the same
        ``(content_session_id, tool_use_id)`` while the first is queued returns its id with
        ``duplicate=True`` and adds nothing."""
        self._check_open()
        sid = normalize_session_id(session_id)
        csid = validate_content_session_id(content_session_id)
        payload_json = encode_message(message)
        result = self._enqueue(sid, csid, message, payload_json)
        if not result.duplicate:
            self._notify_local()
        return result

    def enqueue_many(
        self, items: Iterable[tuple[SessionId, str, PendingMessage]]
    ) -> list[EnqueueResult]:
        """Enqueue several ``(session_id, content_session_id, message)`` items, in order."""
        return [self.enqueue(sid, csid, msg) for sid, csid, msg in items]

    def create_iterator(
        self,
        session_id: SessionId,
        *,
        stop: threading.Event | None = None,
        idle_timeout: float | None = None,
        on_idle_timeout: Callable[[], None] | None = None,
        lease_s: float | None = None,
        consumer_id: str | None = None,
    ) -> Iterator[PendingMessageWithId]:
        """Yield the session's messages in order, blocking between them and waking fast.

        Ends within ``WAIT_SLICE_S`` of ``stop`` being set, and — after ``idle_timeout`` seconds
        without a message — calls ``on_idle_timeout`` and ends. Claims are *not* renewed
        automatically: a consumer that may outlive ``lease_s`` calls ``extend_lease(msg)``.
        """
        self._check_open()
        sid = normalize_session_id(session_id)
        if idle_timeout is not None:
            _require_positive("idle_timeout", idle_timeout)
        lease = self.options.lease_s if lease_s is None else lease_s
        _require_positive("lease_s", lease)
        if consumer_id is None:
            consumer_id = f"c{random.getrandbits(48):012x}"
        return self._iterate(sid, stop, idle_timeout, on_idle_timeout, lease, consumer_id)

    def _iterate(
        self,
        sid: str,
        stop: threading.Event | None,
        idle_timeout: float | None,
        on_idle_timeout: Callable[[], None] | None,
        lease_s: float,
        consumer_id: str,
    ) -> Iterator[PendingMessageWithId]:
        idle_deadline = None if idle_timeout is None else time.monotonic() + idle_timeout
        while not (stop is not None and stop.is_set()):
            self._check_open()
            mark = self._wakeup_mark(sid)
            msg = self._claim_next(sid, consumer_id, lease_s)
            if msg is not None:
                yield msg
                if idle_timeout is not None:
                    idle_deadline = time.monotonic() + idle_timeout
                continue
            wait_s = self.WAIT_SLICE_S
            if idle_deadline is not None:
                left = idle_deadline - time.monotonic()
                if left <= 0:
                    if on_idle_timeout is not None:
                        on_idle_timeout()
                    return
                wait_s = min(wait_s, left)
            self._wait_for_work(sid, wait_s, mark)

    def claim_next(
        self, session_id: SessionId, *, lease_s: float | None = None, consumer_id: str = ""
    ) -> PendingMessageWithId | None:
        """Claim the session's head without blocking, or return None if it is not claimable."""
        self._check_open()
        sid = normalize_session_id(session_id)
        lease = self.options.lease_s if lease_s is None else lease_s
        _require_positive("lease_s", lease)
        return self._claim_next(sid, consumer_id, lease)

    def mark_processed(self, msg: PendingMessageWithId) -> None:
        """Acknowledge: the message is deleted and never delivered again (P5). Raises
        ``StaleClaimError`` if the claim it was delivered under no longer holds (P8)."""
        self._check_open()
        self._require_delivered(msg)
        self._mark_processed(msg)

    def mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool = True) -> None:
        """Give the message back: with ``retry`` it is re-queued at its place after a backoff,
        until ``max_attempts`` deliveries; without, or past that, it is dead (kept, not
        delivered)."""
        self._check_open()
        self._require_delivered(msg)
        if not isinstance(reason, str):
            raise InvalidMessageError("reason", f"must be a str, got {type(reason).__name__}")
        self._mark_failed(msg, reason[:2000], bool(retry))

    def extend_lease(self, msg: PendingMessageWithId, lease_s: float | None = None) -> Claim:
        """Renew the claim for another ``lease_s`` seconds; returns the renewed claim."""
        self._check_open()
        self._require_delivered(msg)
        lease = self.options.lease_s if lease_s is None else lease_s
        _require_positive("lease_s", lease)
        return self._extend_lease(msg, lease)

    def get_pending_count(self, session_id: SessionId) -> int:
        """Messages of the session that are pending or in flight."""
        self._check_open()
        return self._pending_count(normalize_session_id(session_id))

    def get_total_queue_depth(self) -> int:
        """Messages of every session that are pending or in flight."""
        self._check_open()
        return self._total_depth()

    def clear_pending_for_session(self, session_id: SessionId) -> int:
        """Delete the session's pending messages (not one in flight); return how many."""
        self._check_open()
        return self._clear_pending(normalize_session_id(session_id))

    def reset_processing_to_pending(self, session_id: SessionId | None = None) -> int:
        """Startup recovery: return in-flight messages to pending at their place; None = all."""
        self._check_open()
        sid = None if session_id is None else normalize_session_id(session_id)
        moved = self._reset_processing(sid)
        if moved:
            self._notify_local()
        return moved

    def list_dead(self, session_id: SessionId | None = None) -> list[RawMessage]:
        """Dead messages (failed without retry, or out of attempts), oldest first."""
        self._check_open()
        sid = None if session_id is None else normalize_session_id(session_id)
        return [
            m
            for m in self.inspect_raw()
            if m.status == "dead" and (sid is None or m.session_id == sid)
        ]

    def close(self) -> None:
        """Release the engine's resources. Idempotent; any later use raises EngineClosedError."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._notify_local()
        self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------- helpers for engines

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError(
                f"this {type(self).__name__} was closed; open a new one with open_engine()"
            )

    @staticmethod
    def _require_delivered(msg: object) -> None:
        if not isinstance(msg, PendingMessageWithId) or msg.claim is None:
            raise InvalidMessageError(
                "msg", "must be a PendingMessageWithId delivered by this engine's iterator"
            )

    def retry_delay_ms(self, attempt: int) -> int:
        """Exponential backoff with full jitter for a message that failed ``attempt`` times."""
        base = self.options.retry_backoff_s
        if base == 0:
            return 0
        ceiling = min(self.options.retry_backoff_max_s, base * 2 ** min(attempt - 1, 30))
        return int(1000 * random.uniform(ceiling / 2, ceiling))

    def out_of_attempts(self, attempt: int) -> bool:
        """True when a message delivered ``attempt`` times may not be delivered again."""
        return attempt >= self.options.max_attempts

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {redact_url(self.url)} {state}>"
