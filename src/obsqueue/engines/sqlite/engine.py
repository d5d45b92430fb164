"""``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` — the embedded default.

One SQLite file, shared by every process that opens it, on the ``sqlite3`` module of the
standard library (SQLite >= 3.35 for ``RETURNING``). Every statement is in
``engines/sqlite/queries.sql`` (named sections); only the namespace and the ``synchronous`` level
are put into the text, both checked first.

Storage, per namespace, in the file: ``<namespace>_messages_v1`` (one row per message that is
pending, in flight or dead; acked and cleared rows are deleted) and ``<namespace>_tokens_v1``
(one row: the last fencing token handed out). Opening an engine switches the file to WAL and
creates the tables and indexes with ``IF NOT EXISTS`` inside ``BEGIN IMMEDIATE``, so processes
opening one file at once are safe; after ``destroy()`` drops them they are created again on next
use (ids and tokens then start again from 1).

Claims: a session's *head* is its lowest-id row that is pending or processing. A claim first
reads the head without a lock; only when the head looks claimable (pending and due, or processing
with its lease run out) does it take the write lock (``BEGIN IMMEDIATE``), read the head again and
decide as the in-memory reference does: claim it (``attempt + 1``, a new token, the lease end from
the wall clock) or, on a stall past ``max_attempts``, make it dead. Idle consumers therefore never
queue for the write lock. The many-session iterator's claim round (``sqlite/heads.py``)
decides the same way for the heads of up to ``CLAIM_BATCH`` sessions in one such transaction
(one commit). A partial unique index on ``session_id WHERE status = 'processing'``
guards one in flight per session whatever the logic does. Ids are ``AUTOINCREMENT``: assigned
under the write lock, so they grow in commit order, and never reused.

Fencing: tokens come from the one-row tokens table, bumped in the claim's transaction, so they
are unique over the file's life. ``mark_processed`` (a ``DELETE``), ``mark_failed`` and
``extend_lease`` are single statements that name the token in their ``WHERE``; no row matched
means ``StaleClaimError``. Dedupe: a partial unique index on ``(content_session_id,
tool_use_id)`` over pending and in-flight rows; an enqueue is one ``INSERT … ON CONFLICT DO
NOTHING`` on it, and reads the live duplicate's id only when it inserted nothing;
``enqueue_many`` stores its batch in one transaction. Hand-off (``engines/handoff.py``): an ack
of a message an iterator delivered deletes it and claims the next head in one transaction.

Wakeup (``engines/sqlite/wakeup.py``): ``PRAGMA data_version`` changes on a connection whenever
*another* connection commits to the file, from any process. The first blocked iterator starts one
watcher thread per engine that reads it on a dedicated connection that never writes, while any
iterator waits, and wakes the waiters when it changed. On Linux (``wakeup="auto"``) the thread
blocks on inotify events for writes to the ``-wal`` file, so an idle consumer uses no CPU; with
``wakeup="poll"``, or where inotify is missing, it reads the version every ``poll_interval_s``.
Every commit to the file wakes every waiter of the engine (each re-reads its head, which is
cheap), so one mark serves a many-session wait over any set; enqueues through the same engine
object wake its waiters at once.

Durability (``synchronous``, default ``FULL``, also ``NORMAL``, ``EXTRA``, ``OFF``): in WAL mode
every level keeps a committed write through SIGKILL of any process, because the WAL is written
to the OS before the commit returns (P4, P5). Power loss or an OS crash is survived by ``FULL``
and ``EXTRA`` (the WAL is fsynced at each commit); ``NORMAL`` may lose the last commits (fsync
at checkpoints only) and ``OFF`` never fsyncs. ``describe()["durability"]`` reads the journal mode
and level from a live connection. There is no server, so ``SERVER_CRASH_DURABLE`` is not
declared. WAL needs a local file system (not NFS/SMB): the -wal and -shm files live beside the
database and its shared memory is mapped by every process.

Options (keyword-only, or as URL query parameters, e.g. ``sqlite:///q.db?synchronous=NORMAL``;
a URL parameter wins over a keyword left at its default, and a conflict is an error):
``synchronous``; ``busy_timeout_s`` (default 10: how long a statement waits for another
connection's write lock before failing with ``EngineUnavailableError``); ``wakeup`` (``auto`` or
``poll``) and ``poll_interval_s`` (default 0.01: the poll period, and in either mode the least
time between two wakeups of the waiters). Connections come from a small pool (one per
concurrently busy thread, kept idle for reuse, all closed by ``close()``). An engine object
belongs to the process that opened it; open another one after ``fork()``.

Errors are translated once, in ``_translated``: SQLite errors become ``EngineUnavailableError``
naming the URL and saying what to do (busy, not a database, cannot open, read-only, disk full).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

from obsqueue.engines.base import (
    Claimer,
    ObservationQueueEngine,
    PendingMessageWithId,
    RawMessage,
)
from obsqueue.engines.handoff import Handoff
from obsqueue.engines.sqlite.heads import Heads
from obsqueue.engines.sqlite.rows import first, insert_params, to_raw
from obsqueue.engines.sqlite.settings import (
    DEFAULTS,
    HINTS,
    SYNCHRONOUS_LEVELS,
    Settings,
    check_library,
    compose_queries,
    parse_sqlite_url,
)
from obsqueue.engines.sqlite.wakeup import ChangeWatcher
from obsqueue.engines.types import Capability, Claim, EnqueueResult, PendingMessage, now_ms
from obsqueue.errors import EngineUnavailableError, redact_url, stale_claim

__all__ = ["SYNCHRONOUS_LEVELS", "SqliteEngine", "compose_queries", "parse_sqlite_url"]

T = TypeVar("T")
Conn = sqlite3.Connection


class SqliteEngine(ObservationQueueEngine):
    """Rows in one SQLite file in WAL mode, claimed head-first under ``BEGIN IMMEDIATE``."""

    scheme: ClassVar[str] = "sqlite"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {
        Capability.SERVER_CRASH_DURABLE
    }
    server_kind: ClassVar[str | None] = None

    def __init__(
        self,
        url: str,
        *,
        synchronous: str = DEFAULTS["synchronous"],
        busy_timeout_s: float = DEFAULTS["busy_timeout_s"],
        poll_interval_s: float = DEFAULTS["poll_interval_s"],
        wakeup: str = DEFAULTS["wakeup"],
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        check_library()
        settings = Settings.of(
            url,
            synchronous=synchronous,
            busy_timeout_s=busy_timeout_s,
            poll_interval_s=poll_interval_s,
            wakeup=wakeup,
        )
        self.synchronous = settings.synchronous
        self.busy_timeout_s = settings.busy_timeout_s
        self.poll_interval_s = settings.poll_interval_s
        self.wakeup = settings.wakeup
        self.path = os.path.abspath(settings.path)
        self._where = f"SQLite file {self.path} ({redact_url(url)})"
        self._q = compose_queries(self.options.namespace, self.synchronous)
        self._pid = os.getpid()
        self._pool_lock = threading.Lock()
        self._idle: list[Conn] = []
        self._watcher = ChangeWatcher(
            connect=self._connect,
            version_sql=self._q["data_version"],
            cond=self._local_wakeup,
            interval_s=self.poll_interval_s,
            wal_path=f"{self.path}-wal",
            use_inotify=self.wakeup == "auto",
        )
        self._heads = Heads(run=self._run, q=self._q, out_of_attempts=self.out_of_attempts)
        self._handoff = Handoff(
            ack_and_claim=self._ack_and_claim,
            unclaim=self._unclaim,
            wake=lambda _session: self._notify_local(),
        )
        self._open_file()

    # ------------------------------------------------------------------ connections, errors

    def _open_file(self) -> None:
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise EngineUnavailableError(
                f"{self._where}: directory {directory} does not exist; create it first"
            )
        try:
            self._run(self._prepare_file)
        except BaseException:
            self._drain_pool()
            raise

    def _prepare_file(self, conn: Conn) -> None:
        deadline = time.monotonic() + self.options.connect_timeout_s
        while True:  # a file being created by another process at this moment may be locked
            try:
                mode = conn.execute(self._q["enable_wal"]).fetchall()[0][0]
                break
            except sqlite3.OperationalError as exc:
                if not exc.sqlite_errorname.startswith("SQLITE_BUSY"):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if str(mode).lower() != "wal":
            raise EngineUnavailableError(
                f"{self._where}: could not switch to WAL (journal_mode is {mode}); use a file on "
                "a local file system"
            )
        self._script(conn, "create_schema")

    def _connect(self) -> Conn:
        """A new connection to the file, set up as every connection of this engine is."""
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_s,
            isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
            check_same_thread=False,  # pooled: used by one thread at a time, closed by any
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(self._q["set_synchronous"])
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkout(self) -> Conn:
        self._check_open()
        if os.getpid() != self._pid:
            raise EngineUnavailableError(
                f"{self._where}: this engine was opened in process {self._pid}; open a new one "
                "in each process (connections cannot cross fork())"
            )
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _checkin(self, conn: Conn) -> None:
        with self._pool_lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _drain_pool(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """The one place SQLite errors are translated."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise  # a constraint the logic must never hit: a bug, not an outage
        except sqlite3.ProgrammingError:
            self._check_open()
            raise
        except sqlite3.DatabaseError as exc:
            self._check_open()
            name = getattr(exc, "sqlite_errorname", "") or ""
            hint = next((h for code, h in HINTS.items() if name.startswith(code)), None)
            raise EngineUnavailableError(
                f"{self._where}: {exc}; {hint or 'check the file and its directory'}"
            ) from exc

    def _run(self, op: Callable[[Conn], T], *, write: bool = False) -> T:
        """Run ``op`` on a pooled connection, inside ``BEGIN IMMEDIATE`` when ``write``. Tables
        dropped by ``destroy()`` are created again and ``op`` retried once."""
        with self._translated():
            conn = self._checkout()
            try:
                try:
                    return self._once(conn, op, write)
                except sqlite3.OperationalError as exc:
                    if not self._missing_table(exc):
                        raise
                self._script(conn, "create_schema")
                return self._once(conn, op, write)
            finally:
                self._checkin(conn)

    def _once(self, conn: Conn, op: Callable[[Conn], T], write: bool) -> T:
        if not write:
            return op(conn)
        conn.execute(self._q["begin_write"])
        try:
            result = op(conn)
            conn.execute(self._q["commit"])
        except BaseException:
            self._rollback(conn)
            raise
        return result

    def _script(self, conn: Conn, name: str) -> None:
        """Run a multi-statement section in one write transaction."""
        try:
            conn.executescript(f"{self._q['begin_write']};\n{self._q[name]};\n{self._q['commit']};")
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: Conn) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(self._q["rollback"])

    def _missing_table(self, exc: sqlite3.OperationalError) -> bool:
        text = str(exc)
        return "no such table" in text and f"{self.options.namespace}_" in text

    def _rows(self, name: str, params: dict[str, Any] | None = None) -> list[Any]:
        return self._run(lambda conn: conn.execute(self._q[name], params or {}).fetchall())

    def _changed(self, name: str, params: dict[str, Any]) -> int:
        return self._run(lambda conn: conn.execute(self._q[name], params).rowcount)

    # ----------------------------------------------------------------------------- enqueue

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        params = insert_params(session_id, content_session_id, message, payload_json, now_ms())
        return self._run(lambda conn: self._insert_deduped(conn, params))

    def _enqueue_batch(
        self, items: list[tuple[str, str, PendingMessage, str]]
    ) -> list[EnqueueResult]:
        """Every item in one ``BEGIN IMMEDIATE`` transaction: one commit, one fsync."""
        now = now_ms()
        batch = [insert_params(sid, csid, msg, payload, now) for sid, csid, msg, payload in items]
        return self._run(lambda c: [self._insert_deduped(c, p) for p in batch], write=True)

    def _insert_deduped(self, conn: Conn, params: dict[str, Any]) -> EnqueueResult:
        """Insert, or return the live duplicate: one statement unless there is a duplicate."""
        for _ in range(3):
            inserted = first(conn.execute(self._q["insert"], params).fetchall())
            if inserted is not None:
                return EnqueueResult(int(inserted[0]))
            found = first(conn.execute(self._q["find_duplicate"], params).fetchall())
            if found is not None:
                return EnqueueResult(int(found[0]), duplicate=True)
            # the duplicate was acked or died between the two statements: insert again
        raise EngineUnavailableError(f"{self._where}: the dedupe key kept changing; retry")

    # ------------------------------------------------------------------------------- claim

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        return self._heads.claim_next(session_id, consumer_id, lease_s)

    # ------------------------------------------------ the many-session iterator (heads.py)

    #: One claim round commits once for up to this many heads. Larger rounds saved no more
    #: commits worth measuring and hold unyielded heads (their sessions wait) longer.
    CLAIM_BATCH: ClassVar[int] = 8

    def _claim_heads(
        self, sids: tuple[str, ...] | None, consumer_id: str, lease_s: float, limit: int
    ) -> list[PendingMessageWithId]:
        return self._heads.claim_many(sids, consumer_id, lease_s, limit)

    def _unclaim_heads(self, msgs: list[PendingMessageWithId]) -> None:
        self._heads.unclaim_many(msgs)
        self._notify_local()

    def _sessions_with_work(self) -> list[str]:
        return self._heads.sessions_with_work()

    def _wakeup_mark_many(self, sids: tuple[str, ...] | None) -> object:
        return self._wakeup_mark("")  # the watcher is file-wide: its mark serves any sessions

    def _wait_for_any(self, sids: tuple[str, ...] | None, timeout_s: float, mark: object) -> None:
        self._wait_for_work("", timeout_s, mark)

    # ------------------------------------------------------------------ acks and failures

    @staticmethod
    def _claim_params(msg: PendingMessageWithId) -> dict[str, Any]:
        assert msg.claim is not None
        return {"id": msg.id, "token": msg.claim.token}

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        self._handoff.ack(msg, self._ack_alone)

    def _ack_alone(self, msg: PendingMessageWithId) -> None:
        if not self._changed("ack", self._claim_params(msg)):
            raise stale_claim(msg)
        self._notify_local()

    def _ack_and_claim(
        self, msg: PendingMessageWithId, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        """Delete ``msg`` and claim its session's next head in one transaction (one fsync)."""

        def op(conn: Conn) -> PendingMessageWithId | None:
            if not conn.execute(self._q["ack"], self._claim_params(msg)).rowcount:
                raise stale_claim(msg)  # rolled back: nothing claimed
            return self._heads.claim_head(conn, msg.session_id, consumer_id, lease_s)

        nxt = self._run(op, write=True)
        if nxt is None:
            self._notify_local()
        return nxt

    def _unclaim(self, msg: PendingMessageWithId) -> None:
        """Give back a head claimed with an ack but never handed out; best effort (else it comes
        back when its lease runs out)."""
        with contextlib.suppress(Exception), self._translated():
            conn = self._connect()
            try:
                conn.execute(self._q["unclaim"], self._claim_params(msg))
            finally:
                conn.close()
        self._notify_local()

    def _claimer(
        self, sid: str, consumer_id: str, lease_s: float, stop: threading.Event | None
    ) -> contextlib.AbstractContextManager[Claimer]:
        """Claims handed over by ``_ack_and_claim`` first (``engines/handoff.py``)."""
        return self._handoff.claimer(
            sid, consumer_id, lease_s, stop, lambda: self._claim_next(sid, consumer_id, lease_s)
        )

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        # The token names one delivery, and a delivery's attempt never changes: msg.attempt is
        # the stored attempt whenever the token still matches.
        self._handoff.forget(msg)
        dead = not retry or self.out_of_attempts(msg.attempt)
        params = {
            **self._claim_params(msg),
            "status": "dead" if dead else "pending",
            "available_at_ms": 0 if dead else now_ms() + self.retry_delay_ms(msg.attempt),
            "reason": reason,
        }
        if not self._changed("fail", params):
            raise stale_claim(msg)
        self._notify_local()

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        params = {**self._claim_params(msg), "lease_expires_at_ms": now_ms() + int(lease_s * 1000)}
        row = first(self._run(lambda conn: conn.execute(self._q["extend"], params).fetchall()))
        if row is None:
            raise stale_claim(msg)
        return Claim(params["token"], row["lease_expires_at_ms"], row["consumer_id"] or "")

    # ---------------------------------------------------------------- counts and recovery

    def _pending_count(self, session_id: str) -> int:
        return int(self._rows("pending_count", {"session_id": session_id})[0][0])

    def _total_depth(self) -> int:
        return int(self._rows("total_depth")[0][0])

    def _clear_pending(self, session_id: str) -> int:
        return self._changed("clear_pending", {"session_id": session_id})

    def _reset_processing(self, session_id: str | None) -> int:
        if session_id is None:
            return self._changed("reset_all", {})
        return self._changed("reset_session", {"session_id": session_id})

    # ----------------------------------------------------------------- oracle and admin

    def inspect_raw(self) -> list[RawMessage]:
        self._check_open()
        return [to_raw(row) for row in self._rows("inspect")]

    def describe(self) -> dict[str, Any]:
        self._check_open()
        row = self._rows("durability")[0]
        level = SYNCHRONOUS_LEVELS[row["synchronous"]]
        return {
            "library": {"sqlite": sqlite3.sqlite_version},
            "client": {
                "sqlite": sqlite3.sqlite_version,
                "python": platform.python_version(),
                "path": self.path,
                "busy_timeout_s": row["busy_timeout_ms"] / 1000,
                "poll_interval_s": self.poll_interval_s,
                "wakeup": self._watcher.mode,
            },
            "server": None,
            "durability": {
                "synchronous": level,
                "journal_mode": row["journal_mode"],
                "survives_power_loss": level in ("FULL", "EXTRA"),
            },
        }

    def destroy(self) -> None:
        self._check_open()
        self._run(lambda conn: self._script(conn, "drop_schema"))

    def _close(self) -> None:
        self._handoff.close()
        self._watcher.stop()
        self._drain_pool()

    # ------------------------------------------------------------------------------ wakeup

    def _wakeup_mark(self, session_id: str) -> object:
        with self._translated():
            self._watcher.start()
        return self._local_seq, self._watcher.seq

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        self._watcher.wait_for(
            lambda: self._closed or (self._local_seq, self._watcher.seq) != mark, timeout_s
        )
