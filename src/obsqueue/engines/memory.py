"""``memory://`` — the in-memory reference engine.

It keeps the whole contract in one process under one lock, so it serves as the conformance
suite's model and drives the unit tests of the harness, reports and CLI with no server running.
It cannot be shared by processes nor survive one, so it does not declare ``MULTI_PROCESS``,
``DURABLE_ENQUEUE``, ``SERVER_CRASH_DURABLE``, ``OS_CRASH_DURABLE`` or ``DURABLE_PROCESSING``.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.engines.base import ObservationQueueEngine, PendingMessageWithId, RawMessage, now_ms
from obsqueue.engines.records import delivered, stored
from obsqueue.engines.types import Capability, Claim, EnqueueResult, MessageStatus, PendingMessage
from obsqueue.errors import stale_claim

__all__ = ["MemoryEngine"]


@dataclass(slots=True)
class _Row:
    id: int
    session_id: str
    content_session_id: str
    kind: str
    tool_use_id: str | None
    payload_json: str
    original_timestamp: int
    enqueued_at_ms: int
    status: MessageStatus = "pending"
    attempt: int = 0
    available_at_ms: int = 0
    claim_token: int | None = None
    lease_expires_at_ms: int = 0
    consumer_id: str = ""
    last_error: str | None = None

    def fields(self) -> tuple[int, str, str, str, str | None, str, int]:
        """What ``delivered`` and ``stored`` take first: id, session, message, as stored."""
        return (
            self.id,
            self.session_id,
            self.content_session_id,
            self.kind,
            self.tool_use_id,
            self.payload_json,
            self.original_timestamp,
        )

    def claim(self) -> tuple[int | None, int | None]:
        """The claim the oracle reports: token and lease end, or none."""
        held = self.claim_token is not None
        return self.claim_token, self.lease_expires_at_ms if held else None


class MemoryEngine(ObservationQueueEngine):
    """Everything in dicts under one lock; the model the suite compares other engines with."""

    scheme: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {
        Capability.MULTI_PROCESS,
        Capability.DURABLE_ENQUEUE,
        Capability.SERVER_CRASH_DURABLE,
        Capability.OS_CRASH_DURABLE,
        Capability.DURABLE_PROCESSING,
    }

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url, **options)
        self._lock = threading.Lock()
        self._rows: dict[int, _Row] = {}  # insertion order is id order
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        with self._lock:
            if message.tool_use_id is not None:
                for row in self._rows.values():
                    if (
                        row.status != "dead"
                        and row.content_session_id == content_session_id
                        and row.tool_use_id == message.tool_use_id
                    ):
                        return EnqueueResult(row.id, duplicate=True)
            row = _Row(
                next(self._ids),
                session_id,
                content_session_id,
                message.kind,
                message.tool_use_id,
                payload_json,
                message.original_timestamp,
                now_ms(),
            )
            self._rows[row.id] = row
            return EnqueueResult(row.id)

    def _head(self, session_id: str) -> _Row | None:
        for row in self._rows.values():
            if row.session_id == session_id and row.status != "dead":
                return row
        return None

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        with self._lock:
            row = self._head(session_id)
            now = now_ms()
            if row is None:
                return None
            if row.status == "processing":
                if row.lease_expires_at_ms > now:
                    return None
                if self.out_of_attempts(row.attempt):
                    self._kill(row, "lease expired on the last attempt")
                    return None
            elif row.available_at_ms > now:
                return None
            row.status = "processing"
            row.attempt += 1
            row.claim_token = next(self._tokens)
            row.lease_expires_at_ms = now + int(lease_s * 1000)
            row.consumer_id = consumer_id
            return self._delivered(row)

    def _kill(self, row: _Row, reason: str) -> None:
        row.status = "dead"
        row.claim_token = None
        row.last_error = reason

    @staticmethod
    def _delivered(row: _Row) -> PendingMessageWithId:
        claim = (row.claim_token, row.lease_expires_at_ms, row.consumer_id)
        return delivered(*row.fields(), row.attempt, claim, row.enqueued_at_ms)

    def _claimed_row(self, msg: PendingMessageWithId) -> _Row:
        row = self._rows.get(msg.id)
        assert msg.claim is not None
        if row is None or row.status != "processing" or row.claim_token != msg.claim.token:
            raise stale_claim(msg)
        return row

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        with self._lock:
            row = self._claimed_row(msg)
            del self._rows[row.id]
        self._notify_local()

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        with self._lock:
            row = self._claimed_row(msg)
            if not retry or self.out_of_attempts(row.attempt):
                self._kill(row, reason)
            else:
                row.status = "pending"
                row.claim_token = None
                row.last_error = reason
                row.available_at_ms = now_ms() + self.retry_delay_ms(row.attempt)
        self._notify_local()

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        with self._lock:
            row = self._claimed_row(msg)
            row.lease_expires_at_ms = now_ms() + int(lease_s * 1000)
            return Claim(msg.claim.token, row.lease_expires_at_ms, row.consumer_id)  # type: ignore[union-attr]

    def _pending_count(self, session_id: str) -> int:
        with self._lock:
            return sum(
                1 for r in self._rows.values() if r.session_id == session_id and r.status != "dead"
            )

    def _total_depth(self) -> int:
        with self._lock:
            return sum(1 for r in self._rows.values() if r.status != "dead")

    def _clear_pending(self, session_id: str) -> int:
        with self._lock:
            doomed = [
                r.id
                for r in self._rows.values()
                if r.session_id == session_id and r.status == "pending"
            ]
            for row_id in doomed:
                del self._rows[row_id]
            return len(doomed)

    def _reset_processing(self, session_id: str | None) -> int:
        with self._lock:
            moved = 0
            for row in self._rows.values():
                if row.status == "processing" and session_id in (None, row.session_id):
                    row.status = "pending"
                    row.claim_token = None
                    row.available_at_ms = 0
                    moved += 1
            return moved

    def inspect_raw(self) -> list[RawMessage]:
        with self._lock:
            return [
                stored(*r.fields(), r.status, r.attempt, r.claim(), r.last_error)
                for r in self._rows.values()
            ]

    def describe(self) -> dict[str, Any]:
        return {
            "library": None,
            "client": None,
            "server": None,
            "durability": {"storage": "process memory", "survives_process_exit": False},
        }

    def destroy(self) -> None:
        with self._lock:
            self._rows.clear()

    def _close(self) -> None:
        with self._lock:
            self._rows = {}
