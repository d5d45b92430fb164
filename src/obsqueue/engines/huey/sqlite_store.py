"""The SQLite store of the huey+sqlite adapter's glue (``huey/glue.py``).

Tables ``obsq_huey_*`` (``huey/glue.sql``) in Huey's own SQLite file; a slot changes in a BEGIN
IMMEDIATE transaction on one connection per engine, with ``synchronous=FULL``. Imports no Redis
client: ``huey+sqlite://`` needs Huey only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from obsqueue.engines.huey.glue import DeadRow, GlueStore, Prepared, Slot, Tx, decide_existing
from obsqueue.engines.types import now_ms
from obsqueue.sqlfile import load_queries

__all__ = ["SqliteGlue"]

T = TypeVar("T")

POLL_S = 0.005


class SqliteGlue(GlueStore):
    """Glue tables (``engines/huey/glue.sql``) in Huey's SQLite file; one connection per
    engine under a lock, each change a BEGIN IMMEDIATE transaction, synchronous=FULL."""

    def __init__(self, path: str, namespace: str, busy_timeout_s: float) -> None:
        self._q = load_queries(__package__ or "", "glue.sql")
        self._ns = namespace
        self._lock = threading.Lock()
        self._conn = self._connect(path, busy_timeout_s)
        self._watch_lock = threading.Lock()
        self._watch = self._connect(path, busy_timeout_s)
        with self._txn() as conn:
            for name in ("meta", "slot", "env", "dead", "dedupe"):
                conn.execute(self._q[f"create_{name}"])

    @staticmethod
    def _connect(path: str, busy_timeout_s: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, name: str, *params: Any) -> list[Any]:
        with self._lock:
            return self._conn.execute(self._q[name], (self._ns, *params)).fetchall()

    def _next(self, conn: sqlite3.Connection, name: str) -> int:
        return int(conn.execute(self._q["next_value"], (self._ns, name)).fetchone()[0])

    def update(self, session: str, fn: Callable[[Tx], T], *, snapshot_first: bool = False) -> T:
        if snapshot_first and (found := self._snapshot(session, fn)):
            return found[0]
        with self._txn() as conn:
            row = conn.execute(self._q["read_slot"], (self._ns, session)).fetchone()
            result, tx = self._run(
                session, Slot.loads(row[0] if row else None), fn, lambda: self._next(conn, "tokens")
            )
            if tx.dirty():
                conn.execute(self._q["write_slot"], (self._ns, session, tx.slot.dumps()))
                for op in tx.ops:
                    self._apply(conn, session, op)
        return result

    def _apply(self, conn: sqlite3.Connection, session: str, op: tuple[Any, ...]) -> None:
        kind, args = op[0], op[1:]
        if kind == "bury":
            conn.execute(self._q["bury"], (self._ns, args[0], session, *args[1:]))
        elif kind != "wake":  # a commit is its own wake-up: waiters watch data_version
            conn.execute(self._q[kind if kind != "forget" else "forget_dedupe"], (self._ns, *args))

    def read_slots(self, sessions: Sequence[str]) -> dict[str, Slot]:
        if len(sessions) == 1:
            row = self._read("read_slot", sessions[0])
            return {sessions[0]: Slot.loads(row[0][0] if row else None)}
        wanted = set(sessions)
        found = {s: Slot.loads(d) for s, d in self._read("list_slots") if s in wanted}
        return {s: found.get(s, Slot()) for s in sessions}

    def prepare(self, session: str, csid: str, tuid: str | None, stale_id: int) -> Prepared:
        with self._txn() as conn:
            if tuid is not None:
                rec = conn.execute(self._q["read_dedupe"], (self._ns, csid, tuid)).fetchone()
                if rec is not None and rec[0] != stale_id:
                    doc = conn.execute(self._q["read_slot"], (self._ns, rec[1])).fetchone()
                    return decide_existing(rec[0], rec[1], rec[2], Slot.loads(doc and doc[0]))
            message_id = self._next(conn, "ids")
            conn.execute(self._q["register_session"], (self._ns, session))
            if tuid is not None:
                params = (self._ns, csid, tuid, message_id, session, now_ms())
                conn.execute(self._q["write_dedupe"], params)
        return Prepared("new", message_id)

    def forget_many(self, keys: Sequence[tuple[str, str, int]]) -> None:
        with self._txn() as conn:
            for key in keys:
                conn.execute(self._q["forget_dedupe"], (self._ns, *key))

    def envs(self, ids: Sequence[int]) -> dict[int, str]:
        return {int(i): e for i, e in self._read("read_envs", json.dumps(list(ids)))}

    def dead(self) -> list[DeadRow]:
        return [DeadRow(*row) for row in self._read("list_dead")]

    def sessions(self) -> list[str]:
        return [s for s, _ in self._read("list_slots")]

    def wake(self, session: str) -> None:
        """Nothing to do: the commit that made the change bumps ``data_version``."""

    def wait_mark(self, session: str) -> object:
        with self._watch_lock:
            return self._watch.execute("PRAGMA data_version").fetchone()[0]

    def wait(self, session: str, timeout_s: float, mark: object) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.wait_mark(session) == mark:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def huey_tasks(self, queue: str) -> list[bytes]:
        """The backdoor read of Huey's own ``task`` table: one queue's task data, dequeue order."""
        with self._lock:
            rows = self._conn.execute(self._q["huey_tasks"], (queue,)).fetchall()
        return [bytes(data) for (data,) in rows]

    def pragmas(self) -> dict[str, Any]:
        with self._lock:
            return {
                name: self._conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous")
            }

    def destroy(self) -> None:
        with self._txn() as conn:
            for name in ("meta", "slot", "env", "dead", "dedupe"):
                conn.execute(self._q[f"destroy_{name}"], (self._ns,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        with self._watch_lock:
            self._watch.close()
