"""Deliberately broken engines built on the SQLite engine: durability bugs, which the in-memory
engine cannot show because it declares no durability.

Both are "write-behind" optimisations that look fine inside one process — every other call
flushes the buffer first, so the process reads its own writes — and lose what they buffered
when the process is SIGKILLed or the engine is closed.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from obsqueue.engines.base import EnqueueResult, PendingMessage, PendingMessageWithId, now_ms
from obsqueue.engines.sqlite.engine import Conn, SqliteEngine

__all__ = ["SQLITE_MUTANTS", "BufferedAckEngine", "BufferedEnqueueEngine"]

FLUSH_EVERY_S = 0.25


class BufferedEnqueueEngine(SqliteEngine):
    """Returns from ``enqueue`` before the row is written: rows wait in a buffer (with ids
    handed out in advance) that a timer thread writes every 250 ms."""

    BREAKS: ClassVar[str] = "P4"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._buffer: list[dict[str, Any]] = []
        self._buffer_lock = threading.RLock()
        self._next_id: int | None = None
        self._timer_stop = threading.Event()
        threading.Thread(target=self._flush_forever, daemon=True).start()

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        with self._buffer_lock:
            if self._next_id is None:
                self._next_id = self._run(self._last_id) + 1
            row = {
                "id": self._next_id,
                "session_id": session_id,
                "content_session_id": content_session_id,
                "kind": message.kind,
                "tool_use_id": message.tool_use_id,
                "payload": payload_json,
                "original_timestamp": message.original_timestamp,
                "enqueued_at_ms": now_ms(),
            }
            self._next_id += 1
            self._buffer.append(row)
        return EnqueueResult(row["id"])

    def _last_id(self, conn: Conn) -> int:
        table = f"{self.options.namespace}_messages_v1"
        rows = conn.execute(
            "SELECT max(seq) FROM sqlite_sequence WHERE name = ?", (table,)
        ).fetchall()
        return int(rows[0][0] or 0) if rows else 0

    def _flush(self) -> None:
        with self._buffer_lock:
            rows, self._buffer = self._buffer, []
            if rows:
                table = f'"{self.options.namespace}_messages_v1"'
                sql = (
                    f"INSERT INTO {table} (id, session_id, content_session_id, kind, tool_use_id,"
                    " payload, original_timestamp, enqueued_at_ms) VALUES (:id, :session_id,"
                    " :content_session_id, :kind, :tool_use_id, :payload, :original_timestamp,"
                    " :enqueued_at_ms)"
                )
                self._run(lambda conn: conn.executemany(sql, rows), write=True)

    def _flush_forever(self) -> None:
        while not self._timer_stop.wait(FLUSH_EVERY_S):
            if self.closed:
                return
            try:
                self._flush()
            except Exception:  # the engine closed under the timer: nothing more to write
                return

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        self._flush()
        return super()._claim_next(session_id, consumer_id, lease_s)

    def _pending_count(self, session_id: str) -> int:
        self._flush()
        return super()._pending_count(session_id)

    def _total_depth(self) -> int:
        self._flush()
        return super()._total_depth()

    def inspect_raw(self) -> list[Any]:
        self._flush()
        return super().inspect_raw()

    def _close(self) -> None:
        self._timer_stop.set()
        self._flush()
        super()._close()


class BufferedAckEngine(SqliteEngine):
    """Acknowledges in memory and writes the delete only when the consumer asks for the next
    message — and forgets the last acknowledgement when the engine closes or the process dies."""

    BREAKS: ClassVar[str] = "P5"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._acks: list[PendingMessageWithId] = []
        self._acks_lock = threading.Lock()

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        with self._acks_lock:
            self._acks.append(msg)

    def _flush_acks(self) -> None:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        for msg in acks:
            super()._mark_processed(msg)

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        self._flush_acks()
        return super()._claim_next(session_id, consumer_id, lease_s)


SQLITE_MUTANTS: list[type[SqliteEngine]] = [BufferedEnqueueEngine, BufferedAckEngine]
