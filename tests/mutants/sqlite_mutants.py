"""Deliberately broken engines built on the SQLite engine: bugs that only show across processes
or across a crash, which the in-memory engine cannot show (it is one process, not durable).

The first three are "write-behind" optimisations that look fine inside one process — every
other call flushes the buffer first, so the process reads its own writes — and lose what they
buffered when the process is SIGKILLed (or, for two of them, when the engine is closed).
"""

from __future__ import annotations

import threading
import time
import types
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from obsqueue.engines.base import (
    Capability,
    EnqueueResult,
    PendingMessage,
    PendingMessageWithId,
    now_ms,
)
from obsqueue.engines.sqlite.engine import Conn, SqliteEngine
from obsqueue.engines.sqlite.heads import Heads

__all__ = [
    "SQLITE_MUTANTS",
    "AckLostOnKillEngine",
    "BufferedAckEngine",
    "BufferedEnqueueEngine",
    "ProcessClockLeaseEngine",
    "StickySessionEngine",
]

FLUSH_EVERY_S = 0.25


class BufferedEnqueueEngine(SqliteEngine):
    """Returns from ``enqueue`` before the row is written: rows wait in a buffer (with ids
    handed out in advance) that a timer thread writes every 250 ms."""

    BREAKS: ClassVar[str] = "P4"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_enqueues_survive_sigkill_of_the_producer",
        "lost acknowledged enqueues",
    )

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
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_processed_messages_stay_processed_after_reopen",
        "not the 2 unprocessed",
    )

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


class AckLostOnKillEngine(BufferedAckEngine):
    """As ``BufferedAckEngine``, but writes its buffered acks when it closes, so a close and
    reopen shows nothing wrong; only a process killed right after an ack returned loses it. It
    declares no startup recovery, so the suite's SIGKILL-of-a-consumer scenario, which resets
    before its second consumer, does not apply to it."""

    BREAKS: ClassVar[str] = "P5"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_ack_survives_sigkill_right_after_it_returns",
        "ack lost",
    )
    capabilities: ClassVar[frozenset[Capability]] = SqliteEngine.capabilities - {
        Capability.STARTUP_RECOVERY
    }

    def close(self) -> None:
        if not self.closed:
            self._flush_acks()
        super().close()


class StickySessionEngine(SqliteEngine):
    """Keeps a session with the engine object that last claimed from it until that object
    closes — as a single-active-consumer queue keeps its consumer — so a consumer that is done
    with a session but still open starves another one waiting on it."""

    BREAKS: ClassVar[str] = "P2"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_session_passes_to_a_waiting_consumer_while_the_first_stays_open",
        "no hand-over",
    )

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._me = uuid.uuid4().hex
        self._owners = f'"{self.options.namespace}_owners"'
        ddl = f"CREATE TABLE IF NOT EXISTS {self._owners} (session_id TEXT PRIMARY KEY, owner TEXT)"
        self._run(lambda conn: conn.execute(ddl), write=True)

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        sql = f"SELECT owner FROM {self._owners} WHERE session_id = ?"
        owner = self._run(lambda conn: conn.execute(sql, (session_id,)).fetchall())
        if owner and owner[0][0] != self._me:
            return None
        msg = super()._claim_next(session_id, consumer_id, lease_s)
        if msg is not None:
            take = f"INSERT OR REPLACE INTO {self._owners} VALUES (?, ?)"
            self._run(lambda conn: conn.execute(take, (session_id, self._me)), write=True)
        return msg

    def close(self) -> None:
        if not self.closed:
            release = f"DELETE FROM {self._owners} WHERE owner = ?"
            self._run(lambda conn: conn.execute(release, (self._me,)), write=True)
        super().close()


_STARTED_S = time.monotonic()


def _process_clock_ms() -> int:
    """Milliseconds on a clock of this process alone (as a monotonic clock is per machine)."""
    return int((time.monotonic() - _STARTED_S) * 1000)


def _on_process_clock(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` reading ``now_ms`` from ``_process_clock_ms`` instead of the shared wall clock."""
    names = {**func.__globals__, "now_ms": _process_clock_ms}
    return types.FunctionType(func.__code__, names, func.__name__, func.__defaults__)


class ProcessClockLeaseEngine(SqliteEngine):
    """Measures leases and backoffs on a clock private to each process, so a process started
    later than another sees that one's leases end late, and one started earlier sees them end
    early — and takes live claims away."""

    BREAKS: ClassVar[str] = "P7"
    CAUGHT_BY: ClassVar[tuple[str, str]] = (
        "test_live_claim_of_another_process_is_not_taken_before_its_lease",
        "clocks that differ between processes",
    )
    _mark_failed = _on_process_clock(SqliteEngine._mark_failed)
    _extend_lease = _on_process_clock(SqliteEngine._extend_lease)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # every claim decision is made in sqlite/heads.py: its clock is swapped too
        self._heads = _ProcessClockHeads(
            run=self._run, q=self._q, out_of_attempts=self.out_of_attempts
        )


class _ProcessClockHeads(Heads):
    """The engine's claims (one session and many), deciding by the process's own clock."""

    claim_next = _on_process_clock(Heads.claim_next)
    claim_head = _on_process_clock(Heads.claim_head)
    _due_heads = _on_process_clock(Heads._due_heads)
    _claim_due = _on_process_clock(Heads._claim_due)
    _claim = _on_process_clock(Heads._claim)


SQLITE_MUTANTS: list[type[SqliteEngine]] = [
    BufferedEnqueueEngine,
    BufferedAckEngine,
    AckLostOnKillEngine,
    StickySessionEngine,
    ProcessClockLeaseEngine,
]
