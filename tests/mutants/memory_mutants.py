"""Deliberately broken engines built on the in-memory reference engine, one bug each.

Each declares the full capability set of the engine it breaks, so the suite must catch the bug
as a failure of the property named in ``BREAKS`` (and not wave it through as unsupported).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from obsqueue.engines.base import (
    EnqueueResult,
    PendingMessage,
    PendingMessageWithId,
    encode_message,
    normalize_session_id,
    now_ms,
    validate_content_session_id,
)
from obsqueue.engines.memory import MemoryEngine, _Row


class LifoEngine(MemoryEngine):
    """Delivers the newest message of a session first."""

    BREAKS: ClassVar[str] = "P1"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_one_session_is_delivered_in_enqueue_order",
        "delivered out of enqueue order",
    )

    def _head(self, session_id: str) -> _Row | None:
        live = [r for r in self._rows.values() if r.session_id == session_id and r.status != "dead"]
        busy = [r for r in live if r.status == "processing"]
        return busy[0] if busy else (self._pick(live) if live else None)

    def _pick(self, live: list[_Row]) -> _Row:
        return live[-1]


class SecondConsumerEngine(MemoryEngine):
    """Lets a second consumer into a busy session: claims the oldest *pending* message."""

    BREAKS: ClassVar[str] = "P2"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_busy_session_gives_no_second_message",
        "second claim while the session is busy",
    )

    def _head(self, session_id: str) -> _Row | None:
        for row in self._rows.values():
            if row.session_id == session_id and row.status == "pending":
                return row
        return None


class NoDedupeEngine(MemoryEngine):
    """Ignores tool_use_id: every enqueue is stored."""

    BREAKS: ClassVar[str] = "P3"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_duplicate_while_pending_returns_first_id",
        "not a duplicate",
    )

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        undeduped = PendingMessage(message.kind, None, message.payload, message.original_timestamp)
        result = super()._enqueue(session_id, content_session_id, undeduped, payload_json)
        self._rows[result.message_id].tool_use_id = message.tool_use_id
        return result


class ResetToBackEngine(MemoryEngine):
    """Startup recovery re-inserts in-flight messages at the back of their session."""

    BREAKS: ClassVar[str] = "P6"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_reset_returns_in_flight_message_at_its_place",
        "not at its place",
    )

    def _reset_processing(self, session_id: str | None) -> int:
        with self._lock:
            moved = [
                r
                for r in self._rows.values()
                if r.status == "processing" and session_id in (None, r.session_id)
            ]
            for row in moved:
                del self._rows[row.id]
                row.id, row.status, row.claim_token = next(self._ids), "pending", None
                self._rows[row.id] = row
            return len(moved)


class NoStallRecoveryEngine(MemoryEngine):
    """A claim whose lease ran out is never handed out again."""

    BREAKS: ClassVar[str] = "P7"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_expired_claim_is_delivered_again_with_next_attempt",
        "not delivered again after its lease",
    )

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        with self._lock:
            head = self._head(session_id)
            if head is not None and head.status == "processing":
                return None
        return super()._claim_next(session_id, consumer_id, lease_s)


class NoFencingEngine(MemoryEngine):
    """Accepts an ack or a failure under any claim, current or not."""

    BREAKS: ClassVar[str] = "P8"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_ack_under_expired_and_redelivered_claim_raises",
        "DID NOT RAISE StaleClaimError",
    )

    def _claimed_row(self, msg: PendingMessageWithId) -> _Row:
        row = self._rows.get(msg.id)
        if row is None:
            return super()._claimed_row(msg)
        return row


class SlowWakeupEngine(MemoryEngine):
    """Hears no notifications and looks for new work only every 1.6 s."""

    BREAKS: ClassVar[str] = "P9"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_consumer_thread_wakes_fast",
        "wakeup p99",
    )

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        time.sleep(timeout_s)

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        if int(time.monotonic() / 0.2) % 8:
            return None
        return super()._claim_next(session_id, consumer_id, lease_s)


class SecondsTimestampEngine(MemoryEngine):
    """Stores original_timestamp in whole seconds."""

    BREAKS: ClassVar[str] = "P10"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_timestamps_and_kinds_round_trip",
        "timestamps changed",
    )

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        result = super()._enqueue(session_id, content_session_id, message, payload_json)
        row = self._rows[result.message_id]
        row.original_timestamp = row.original_timestamp // 1000 * 1000
        return result


class OffByOneDepthEngine(MemoryEngine):
    """Counts one message too many in every non-empty session."""

    BREAKS: ClassVar[str] = "P11"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_counts_match_the_oracle_at_quiescence",
        "does not match the stored rows",
    )

    def _pending_count(self, session_id: str) -> int:
        count = super()._pending_count(session_id)
        return count + 1 if count else 0


class ClearAllEngine(MemoryEngine):
    """Clearing one session clears every session's pending messages."""

    BREAKS: ClassVar[str] = "P12"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_clear_removes_exactly_that_sessions_pending",
        "removed 8, not 4",
    )

    def _clear_pending(self, session_id: str) -> int:
        sessions = {r.session_id for r in self._rows.values()}
        return sum(super(ClearAllEngine, self)._clear_pending(s) for s in sessions)


class IgnoresStopEngine(MemoryEngine):
    """The iterator never looks at ``stop``."""

    BREAKS: ClassVar[str] = "P13"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_blocked_iterator_ends_within_a_second_of_stop",
        "after stop",
    )

    def _iterate(
        self,
        sid: str,
        stop: Any,
        idle_timeout: float | None,
        on_idle_timeout: Callable[[], None] | None,
        lease_s: float,
        consumer_id: str,
    ) -> Iterator[PendingMessageWithId]:
        return super()._iterate(sid, None, idle_timeout, on_idle_timeout, lease_s, consumer_id)


class WritesBadInputEngine(MemoryEngine):
    """Stores the message first and validates it afterwards."""

    BREAKS: ClassVar[str] = "P14"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_bad_enqueue_names_the_field_and_writes_nothing[mutant-writes-bad-input-payload_set]",
        "bad input was written",
    )

    def enqueue(
        self, session_id: Any, content_session_id: str, message: PendingMessage
    ) -> EnqueueResult:
        self._check_open()
        with self._lock:
            row_id = next(self._ids)
            self._rows[row_id] = _Row(
                row_id, str(session_id), str(content_session_id), "observation", None, "{}", 0, 0
            )
        normalize_session_id(session_id)
        validate_content_session_id(content_session_id)
        payload_json = encode_message(message)
        with self._lock:
            del self._rows[row_id]
        return super()._enqueue(str(session_id), content_session_id, message, payload_json)


class UnboundedRetriesEngine(MemoryEngine):
    """Re-queues failed messages for ever, and never lets a message die."""

    BREAKS: ClassVar[str] = "P15"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_message_is_dead_after_max_attempts_and_visible",
        "not dead after max_attempts",
    )

    def out_of_attempts(self, attempt: int) -> bool:
        return False

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        super()._mark_failed(msg, reason, True)


class WrongSessionEngine(MemoryEngine):
    """When the session asked for has nothing, hands out the head of another session (work
    stealing gone wrong): the message is labelled with its own session, so a history that logs
    only the message's session sees nothing amiss."""

    BREAKS: ClassVar[str] = "P2"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_consumer_is_handed_only_its_own_sessions_messages",
        "misdelivered: a consumer of s1 was handed",
    )

    def _head(self, session_id: str) -> _Row | None:
        own = super()._head(session_id)
        if own is not None:
            return own
        return next((r for r in self._rows.values() if r.status == "pending"), None)


class BackoffSkipEngine(MemoryEngine):
    """While the session's head waits out its retry backoff, delivers the next message."""

    BREAKS: ClassVar[str] = "P1"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_session_waits_out_its_heads_retry_backoff",
        "FIFO broken during backoff",
    )

    def _head(self, session_id: str) -> _Row | None:
        now = now_ms()
        for row in self._rows.values():
            if row.session_id == session_id and row.status != "dead":
                if row.status == "pending" and row.available_at_ms > now:
                    continue  # "not ready yet: try the next one"
                return row
        return None


class OrderByTimestampEngine(LifoEngine):
    """Delivers a session's messages in order of the producer's original_timestamp."""

    BREAKS: ClassVar[str] = "P1"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_order_is_enqueue_order_not_timestamp_order",
        "not in enqueue order",
    )

    def _pick(self, live: list[_Row]) -> _Row:
        return min(live, key=lambda r: r.original_timestamp)


class SessionKeyedDedupeEngine(NoDedupeEngine):
    """Dedupes on (session_id, content_session_id, tool_use_id): the same key from another
    session id is stored again."""

    BREAKS: ClassVar[str] = "P3"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_same_key_from_another_session_is_a_duplicate",
        "was stored anew",
    )

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        with self._lock:
            for row in self._rows.values():
                if (
                    message.tool_use_id is not None
                    and row.status != "dead"
                    and (row.session_id, row.content_session_id, row.tool_use_id)
                    == (session_id, content_session_id, message.tool_use_id)
                ):
                    return EnqueueResult(row.id, duplicate=True)
        return super()._enqueue(session_id, content_session_id, message, payload_json)


class NulStrippingEngine(MemoryEngine):
    """Strips NUL characters from payloads (as a PostgreSQL ``text`` column forces one to do)."""

    BREAKS: ClassVar[str] = "P10"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_payload_round_trips_exactly[mutant-nul-stripping-nul]",
        "payload changed",
    )

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        stripped = payload_json.replace("\\u0000", "")
        return super()._enqueue(session_id, content_session_id, message, stripped)


class CloseDoesNothingEngine(MemoryEngine):
    """close() leaves the engine usable."""

    BREAKS: ClassVar[str] = "P16"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_use_after_close_raises[mutant-close-does-nothing-enqueue]",
        "DID NOT RAISE EngineClosedError",
    )

    def _check_open(self) -> None:
        return None


MEMORY_MUTANTS: tuple[type[MemoryEngine], ...] = (
    LifoEngine,
    SecondConsumerEngine,
    NoDedupeEngine,
    ResetToBackEngine,
    NoStallRecoveryEngine,
    NoFencingEngine,
    SlowWakeupEngine,
    SecondsTimestampEngine,
    OffByOneDepthEngine,
    ClearAllEngine,
    IgnoresStopEngine,
    WritesBadInputEngine,
    UnboundedRetriesEngine,
    CloseDoesNothingEngine,
    WrongSessionEngine,
    BackoffSkipEngine,
    OrderByTimestampEngine,
    SessionKeyedDedupeEngine,
    NulStrippingEngine,
)
