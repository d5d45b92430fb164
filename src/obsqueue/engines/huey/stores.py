"""The two stores of the Huey adapters' glue (``huey_glue.py``): Redis and SQLite.

``RedisGlue`` keeps its keys under ``{namespace}:huey:`` and changes a slot in a WATCH/MULTI/EXEC
transaction, retried on conflict (optimistic: contention is per session). ``SqliteGlue`` keeps
tables ``obsq_huey_*`` (``engines/huey/glue.sql``) in Huey's own SQLite file and changes a
slot in a BEGIN IMMEDIATE transaction on one connection per engine, with ``synchronous=FULL``.

Redis keys (P = ``{namespace}:huey:``): ``P slot:<session>`` (the slot, JSON), ``P env:<id>``
(a held, orphaned or dead message's envelope), ``P dead`` (hash id -> session, attempt, error),
``P d:<len(csid)>:<csid><tuid>`` (dedupe record: [id, session, reserved_at_ms]), ``P ids`` and
``P tokens`` (INCR counters), ``P sessions`` (set), ``P w:<session>`` (wake list, at most one
token, 60 s expiry).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis

from obsqueue.engines.base import now_ms
from obsqueue.engines.huey.glue import DeadRow, GlueStore, Prepared, Slot, Tx, decide_existing
from obsqueue.engines.redis.link import text, unlink_matching
from obsqueue.sqlfile import load_queries

__all__ = ["RedisGlue", "SqliteGlue"]

T = TypeVar("T")

WAKE_TTL_MS = 60_000
POLL_S = 0.005


def _dedupe_field(csid: str, tuid: str) -> str:
    return f"{len(csid)}:{csid}{tuid}"


class RedisGlue(GlueStore):
    """Glue keys under ``{namespace}:huey:``; slot updates are WATCH/MULTI/EXEC transactions."""

    def __init__(self, client: redis.Redis[bytes], namespace: str, socket_timeout_s: float) -> None:
        self._r = client
        self._p = "{" + namespace + "}:huey:"
        self._socket_timeout_s = socket_timeout_s

    def _pipeline(self) -> Any:
        """A transactional pipeline; after WATCH it runs commands at once (typed Any: redis-py
        types a watching pipeline's replies as the pipeline itself)."""
        return self._r.pipeline(transaction=True)

    def _k(self, kind: str, name: object = "") -> str:
        return f"{self._p}{kind}{name}"

    def update(self, session: str, fn: Callable[[Tx], T], *, snapshot_first: bool = False) -> T:
        if snapshot_first and (found := self._snapshot(session, fn)):
            return found[0]
        key = self._k("slot:", session)
        with self._pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    slot = Slot.loads(pipe.get(key))
                    result, tx = self._run(
                        session, slot, fn, lambda: int(pipe.incr(self._k("tokens")))
                    )
                    if not tx.dirty():
                        pipe.reset()
                        return result
                    deletes = self._watched_forgets(pipe, tx.ops)
                    pipe.multi()
                    pipe.set(key, tx.slot.dumps())
                    for op in tx.ops:
                        self._apply(pipe, session, op)
                    if deletes:
                        pipe.delete(*deletes)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def _watched_forgets(self, pipe: Any, ops: list[tuple[Any, ...]]) -> list[str]:
        """Dedupe keys to delete: those that still name the forgotten id (read under WATCH)."""
        wanted = [
            (self._k("d:", _dedupe_field(op[1], op[2])), op[3]) for op in ops if op[0] == "forget"
        ]
        if not wanted:
            return []
        pipe.watch(*[k for k, _ in wanted])
        values = pipe.mget([k for k, _ in wanted])
        return [k for (k, mid), v in zip(wanted, values, strict=True) if v and _rec(v)[0] == mid]

    def _apply(self, pipe: Any, session: str, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "put_env":
            pipe.set(self._k("env:", op[1]), op[2])
        elif kind == "drop_env":
            pipe.delete(self._k("env:", op[1]))
        elif kind == "bury":
            row = {"session": session, "attempt": op[2], "error": op[3]}
            pipe.hset(self._k("dead"), str(op[1]), json.dumps(row))
        elif kind == "wake":
            self._push_wake(pipe, session)

    def _push_wake(self, pipe: Any, session: str) -> None:
        wkey = self._k("w:", session)
        pipe.lpush(wkey, "1")
        pipe.ltrim(wkey, 0, 0)
        pipe.pexpire(wkey, WAKE_TTL_MS)

    def read_slots(self, sessions: Sequence[str]) -> dict[str, Slot]:
        if not sessions:
            return {}
        docs = self._r.mget([self._k("slot:", s) for s in sessions])
        return {s: Slot.loads(d) for s, d in zip(sessions, docs, strict=True)}

    def prepare(self, session: str, csid: str, tuid: str | None, stale_id: int) -> Prepared:
        if tuid is None:
            pipe = self._r.pipeline(transaction=True)
            pipe.incr(self._k("ids"))
            pipe.sadd(self._k("sessions"), session)
            return Prepared("new", int(pipe.execute()[0]))
        dkey = self._k("d:", _dedupe_field(csid, tuid))
        with self._pipeline() as pipe:
            while True:
                try:
                    pipe.watch(dkey)
                    raw = pipe.get(dkey)
                    if raw is not None and _rec(raw)[0] != stale_id:
                        pipe.reset()
                        rid, rsession, rat = _rec(raw)
                        slot = self.read_slots([rsession])[rsession]
                        return decide_existing(rid, rsession, rat, slot)
                    message_id = int(pipe.incr(self._k("ids")))
                    pipe.multi()
                    pipe.set(dkey, json.dumps([message_id, session, now_ms()]))
                    pipe.sadd(self._k("sessions"), session)
                    pipe.execute()
                    return Prepared("new", message_id)
                except redis.WatchError:
                    continue

    def forget_many(self, keys: Sequence[tuple[str, str, int]]) -> None:
        if not keys:
            return
        ops = [("forget", csid, tuid, message_id) for csid, tuid, message_id in keys]
        with self._pipeline() as pipe:
            while True:
                try:
                    deletes = self._watched_forgets(pipe, ops)
                    pipe.multi()
                    if deletes:
                        pipe.delete(*deletes)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def envs(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        values = self._r.mget([self._k("env:", i) for i in ids])
        return {i: text(v) for i, v in zip(ids, values, strict=True) if v is not None}

    def dead(self) -> list[DeadRow]:
        rows = self._r.hgetall(self._k("dead"))
        out = [DeadRow(int(k), **json.loads(v)) for k, v in rows.items()]
        return sorted(out, key=lambda r: r.id)

    def sessions(self) -> list[str]:
        return sorted(text(s) for s in self._r.smembers(self._k("sessions")))

    def wake(self, session: str) -> None:
        pipe = self._r.pipeline(transaction=False)
        self._push_wake(pipe, session)
        pipe.execute()

    def wait_mark(self, session: str) -> object:
        return None  # the wake list itself remembers a wake that comes before the wait

    def wait(self, session: str, timeout_s: float, mark: object) -> None:
        timeout = round(min(timeout_s, self._socket_timeout_s / 2), 3)
        if timeout >= 0.001:  # BLPOP with timeout 0 would block forever
            self._r.blpop([self._k("w:", session)], timeout=timeout)

    def destroy(self) -> None:
        unlink_matching(self._r, self._p + "*")

    def close(self) -> None:
        """The client belongs to the engine, which closes it."""


def _rec(raw: str | bytes) -> tuple[int, str, int]:
    rid, rsession, rat = json.loads(raw)
    return int(rid), str(rsession), int(rat)


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
