"""The engine contract: the abstract engine every engine implements.

An engine implements a handful of primitives (``_enqueue``, ``_claim_next``, ``_mark_processed``,
...). Everything a user calls — validation, the blocking iterator with wakeup, stop and idle
handling, ``enqueue_many``, ``list_dead`` — is concrete here, built on those primitives, so every
engine behaves the same at its edges. An engine overrides a concrete method only to go faster;
to change how its iterator claims (e.g. hand out a message prefetched by an acknowledgement) it
overrides the claim hook ``_claimer``, never the iterator.

The contract is four modules: ``engines/types.py`` (data types, capabilities, limits),
``engines/options.py`` (every option's default and validator), ``engines/validate.py`` (checks
of what callers hand in) and this one. Every name this module exported before the split is
still importable from here.

The model every engine keeps (the contract and the properties are in ``docs/``):

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
import contextlib
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Self, Unpack

from obsqueue.engines.many import IdleClock, iterate_many
from obsqueue.engines.options import CommonOptions, EngineOptions, positive_seconds
from obsqueue.engines.records import decode_payload
from obsqueue.engines.types import (
    KINDS,
    MAX_PAYLOAD_BYTES,
    Capability,
    Claim,
    EnqueueResult,
    MessageKind,
    MessageStatus,
    PendingMessage,
    PendingMessageWithId,
    RawMessage,
    SessionId,
    now_ms,
)
from obsqueue.engines.validate import (
    encode_message,
    normalize_session_id,
    normalize_session_ids,
    require_delivered,
    validate_content_session_id,
)
from obsqueue.errors import EngineClosedError, InvalidMessageError, redact_url

__all__ = [
    "KINDS",
    "MAX_PAYLOAD_BYTES",
    "Capability",
    "Claim",
    "Claimer",
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

#: What the claim hook yields: one non-blocking claim attempt of the iterator's session.
Claimer = Callable[[], PendingMessageWithId | None]


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
    #: How many heads one claim round of the many-session iterator asks ``_claim_heads`` for:
    #: 1 here, so nothing is held unyielded; engines that claim several in one round trip and
    #: give unyielded ones back (``_unclaim_heads``) raise it.
    CLAIM_BATCH: ClassVar[int] = 1
    #: How often the default many-session wait (``_wait_for_any``) looks again on its own.
    ANY_POLL_S: ClassVar[float] = 0.05

    def __init__(self, url: str, **options: Unpack[CommonOptions]) -> None:
        self.url = url
        self.options = EngineOptions(**options)
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

    # ----------------------------------- the many-session iterator's hooks (override to be fast)

    def _claim_heads(
        self, sids: tuple[str, ...] | None, consumer_id: str, lease_s: float, limit: int
    ) -> list[PendingMessageWithId]:
        """Claim the claimable heads of up to ``limit`` distinct sessions of ``sids`` (None:
        every session), in one round trip where the engine can. ``sids`` comes rotated by the
        iterator so that no session starves; this default claims with ``_claim_next`` session
        by session in that order."""
        heads: list[PendingMessageWithId] = []
        for sid in self._sessions_with_work() if sids is None else sids:
            msg = self._claim_next(sid, consumer_id, lease_s)
            if msg is not None:
                heads.append(msg)
                if len(heads) >= limit:
                    break
        return heads

    def _unclaim_heads(self, msgs: list[PendingMessageWithId]) -> None:  # noqa: B027
        """Give back heads ``_claim_heads`` claimed that the iterator never yielded (it was
        stopped or closed first), with their attempt counts restored. This default gives
        nothing back (it never holds more than it yields: ``CLAIM_BATCH`` is 1); such a head
        would come back after its lease like any stalled claim."""

    def _sessions_with_work(self) -> list[str]:
        """Every session with a message pending or in flight, for the many-session iterator
        over every session. This default reads the oracle; engines override it with a query
        of their own."""
        found = {m.session_id for m in self.inspect_raw() if m.status in ("pending", "processing")}
        return sorted(found)

    def _wakeup_mark_many(self, sids: tuple[str, ...] | None) -> object:
        """``_wakeup_mark`` for a set of sessions (None: every session)."""
        if sids is not None and len(sids) == 1:
            return self._wakeup_mark(sids[0])
        return self._local_seq

    def _wait_for_any(self, sids: tuple[str, ...] | None, timeout_s: float, mark: object) -> None:
        """Block until new work may be there in any session of ``sids`` (None: every session),
        or ``timeout_s`` passed. One session waits as ``_wait_for_work`` does; this default
        otherwise hears this engine object's enqueues at once and everything else within
        ``ANY_POLL_S``. Engines with a wakeup that spans sessions override it."""
        if sids is not None and len(sids) == 1:
            self._wait_for_work(sids[0], timeout_s, mark)
            return
        with self._local_wakeup:
            self._local_wakeup.wait_for(
                lambda: self._local_seq != mark or self._closed, min(timeout_s, self.ANY_POLL_S)
            )

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
        """Enqueue several ``(session_id, content_session_id, message)`` items, in order. Every
        item is checked before any is stored; engines that can store them in one transaction or
        pipeline do (a later duplicate of an earlier item of the batch is reported as one)."""
        self._check_open()
        batch = [
            (
                normalize_session_id(sid),
                validate_content_session_id(csid),
                msg,
                encode_message(msg),
            )
            for sid, csid, msg in items
        ]
        results = self._enqueue_batch(batch) if batch else []
        if any(not r.duplicate for r in results):
            self._notify_local()
        return results

    def _enqueue_batch(
        self, items: list[tuple[str, str, PendingMessage, str]]
    ) -> list[EnqueueResult]:
        """Store checked items in order; this default calls ``_enqueue`` for each. Engines
        override it to store them in one transaction or pipeline."""
        return [self._enqueue(sid, csid, msg, payload) for sid, csid, msg, payload in items]

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
        idle = IdleClock(idle_timeout, on_idle_timeout, self.WAIT_SLICE_S)
        lease, consumer = (
            self._lease(lease_s),
            consumer_id if consumer_id is not None else _new_consumer_id(),
        )
        return self._iterate(sid, stop, idle, lease, consumer)

    def _iterate(
        self,
        sid: str,
        stop: threading.Event | None,
        idle: IdleClock,
        lease_s: float,
        consumer_id: str,
    ) -> Iterator[PendingMessageWithId]:
        idle.restart()
        with self._claimer(sid, consumer_id, lease_s, stop) as claim:
            while not (stop is not None and stop.is_set()):
                self._check_open()
                mark = self._wakeup_mark(sid)
                msg = claim()
                if msg is not None:
                    yield msg
                    idle.restart()
                    continue
                wait_s = idle.next_wait()
                if wait_s is None:
                    return
                self._wait_for_work(sid, wait_s, mark)

    def _claimer(
        self, sid: str, consumer_id: str, lease_s: float, stop: threading.Event | None
    ) -> contextlib.AbstractContextManager[Claimer]:
        """The claim hook: what one running iterator calls for its session's next message. The
        context lasts as long as the iterator; this default claims with ``_claim_next``. An
        engine that hands an iterator messages claimed elsewhere (PostgreSQL claims the next
        head in the same statement as the ack) overrides this, never the iterator."""
        return contextlib.nullcontext(lambda: self._claim_next(sid, consumer_id, lease_s))

    def create_multi_session_iterator(
        self,
        session_ids: Iterable[SessionId] | None = None,
        *,
        stop: threading.Event | None = None,
        idle_timeout: float | None = None,
        on_idle_timeout: Callable[[], None] | None = None,
        lease_s: float | None = None,
        consumer_id: str | None = None,
    ) -> Iterator[PendingMessageWithId]:
        """Yield messages from any ready session of ``session_ids`` (None: every session): one
        consumer serving many sessions, as a few consumer processes serve a workload's many.

        Each message is its session's head, claimed under a lease as ``create_iterator`` claims
        it, so per session the order (P1) and one in flight (P2) hold as there: a session's next
        message comes only after this one is acknowledged, failed or its lease ran out. Sessions
        are served in turn; engines claim several ready heads in one round trip
        (``engines/many.py``). ``stop`` and the idle timeout behave as in ``create_iterator``.
        """
        self._check_open()
        sids = normalize_session_ids(session_ids)
        idle = IdleClock(idle_timeout, on_idle_timeout, self.WAIT_SLICE_S)
        lease, consumer = (
            self._lease(lease_s),
            consumer_id if consumer_id is not None else _new_consumer_id(),
        )
        return iterate_many(self, sids, stop, idle, lease, consumer)

    def claim_next(
        self, session_id: SessionId, *, lease_s: float | None = None, consumer_id: str = ""
    ) -> PendingMessageWithId | None:
        """Claim the session's head without blocking, or return None if it is not claimable."""
        self._check_open()
        sid = normalize_session_id(session_id)
        lease = self._lease(lease_s)
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
        lease = self._lease(lease_s)
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
        require_delivered(msg)

    def _lease(self, lease_s: float | None) -> float:
        """The lease a call asked for (checked), or the engine's ``lease_s``."""
        return self.options.lease_s if lease_s is None else positive_seconds("lease_s", lease_s)

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


def _new_consumer_id() -> str:
    return f"c{random.getrandbits(48):012x}"
