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
    validate_content_session_id,
)
from obsqueue.engines.memory import MemoryEngine, _Row


class LifoEngine(MemoryEngine):
    """Delivers the newest message of a session first."""

    BREAKS: ClassVar[str] = "P1"

    def _head(self, session_id: str) -> _Row | None:
        live = [r for r in self._rows.values() if r.session_id == session_id and r.status != "dead"]
        busy = [r for r in live if r.status == "processing"]
        return busy[0] if busy else (live[-1] if live else None)


class SecondConsumerEngine(MemoryEngine):
    """Lets a second consumer into a busy session: claims the oldest *pending* message."""

    BREAKS: ClassVar[str] = "P2"

    def _head(self, session_id: str) -> _Row | None:
        for row in self._rows.values():
            if row.session_id == session_id and row.status == "pending":
                return row
        return None


class NoDedupeEngine(MemoryEngine):
    """Ignores tool_use_id: every enqueue is stored."""

    BREAKS: ClassVar[str] = "P3"

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

    def _claimed_row(self, msg: PendingMessageWithId) -> _Row:
        row = self._rows.get(msg.id)
        if row is None:
            return super()._claimed_row(msg)
        return row


class SlowWakeupEngine(MemoryEngine):
    """Hears no notifications and looks for new work only every 1.6 s."""

    BREAKS: ClassVar[str] = "P9"

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

    def _pending_count(self, session_id: str) -> int:
        count = super()._pending_count(session_id)
        return count + 1 if count else 0


class ClearAllEngine(MemoryEngine):
    """Clearing one session clears every session's pending messages."""

    BREAKS: ClassVar[str] = "P12"

    def _clear_pending(self, session_id: str) -> int:
        sessions = {r.session_id for r in self._rows.values()}
        return sum(super(ClearAllEngine, self)._clear_pending(s) for s in sessions)


class IgnoresStopEngine(MemoryEngine):
    """The iterator never looks at ``stop``."""

    BREAKS: ClassVar[str] = "P13"

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

    def out_of_attempts(self, attempt: int) -> bool:
        return False

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        super()._mark_failed(msg, reason, True)


class CloseDoesNothingEngine(MemoryEngine):
    """close() leaves the engine usable."""

    BREAKS: ClassVar[str] = "P16"

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
)
