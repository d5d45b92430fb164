"""The SQL ceilings: the raw backend doing the harness's work with the fewest statements.

Each message costs three autocommitted statements and nothing else: ``INSERT``; ``UPDATE … SET
status = 'processing' WHERE id = (SELECT … ORDER BY id LIMIT 1 [FOR UPDATE SKIP LOCKED])
RETURNING``; ``DELETE``. ``delivered`` is reported once the claim returns the row, before the
work and the ``DELETE``. The statements are ``benchmarks/sql/raw_postgres.sql`` and
``raw_sqlite.sql`` (the drain reference's, plus ``claim_any``/``claim_among`` to take the oldest
message of any session, or of a set of sessions). No leases, tokens, dedupe, wakeup or retries:
a consumer polls, backing off from 1 ms to 50 ms while it finds nothing.

* PostgreSQL: one psycopg connection per session, autocommit, under the server's own
  ``synchronous_commit`` (read back into ``describe()``).
* SQLite: one ``sqlite3`` connection per session on a WAL file with the engine's
  ``synchronous`` level (``options["synchronous"]``, default FULL) and a 10 s busy timeout.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.peers.base import PostgresTarget, SqliteTarget, holding
from obsqueue.benchmarks.peers.tasks import work
from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession
from obsqueue.errors import InvalidMessageError
from obsqueue.sqlfile import load_queries

__all__ = ["CEILING_GUARANTEES", "RawPostgresTarget", "RawSqliteTarget", "poll_backoff"]

CEILING_GUARANTEES = holding(
    "ack_after_processing",
    notes=(
        "raw SQL: INSERT; UPDATE … (SELECT … [SKIP LOCKED]) RETURNING; DELETE, autocommitted",
        "order holds only while one consumer drains a session (SKIP LOCKED hands the next "
        "row to a second consumer)",
        "a killed consumer's row stays 'processing': nothing returns it",
    ),
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
IDLE_MIN_S, IDLE_MAX_S = 0.001, 0.05


def table_name(namespace: str) -> str:
    """``obsq_ceiling_<namespace>``, the namespace checked as an identifier."""
    if not _IDENT.match(namespace):
        raise InvalidMessageError("namespace", f"must be a short identifier, got {namespace!r}")
    return f"obsq_ceiling_{namespace}"


def poll_backoff(stop: threading.Event, take_one: Callable[[], bool]) -> None:
    """Call ``take_one`` until ``stop``; while it finds nothing, wait 1 ms doubling to 50 ms."""
    idle = IDLE_MIN_S
    while not stop.is_set():
        if take_one():
            idle = IDLE_MIN_S
            continue
        stop.wait(idle)
        idle = min(idle * 2, IDLE_MAX_S)


class SqlSession(TargetSession):
    """The three statements on one autocommitted connection; ``run(name, params)`` -> cursor."""

    def __init__(self, run: Callable[[str, dict[str, Any]], Any], close: Callable[[], None]):
        self._run = run
        self._close = close

    def sessions_param(self, sessions: Sequence[str]) -> object:
        return list(sessions)

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        self._run("enqueue", {"session_id": session_id, "payload": payload})

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        name = "claim_any" if sessions is None else "claim_among"
        params = {} if sessions is None else {"sessions": self.sessions_param(sessions)}

        def take_one() -> bool:
            row = self._run(name, params).fetchone()
            if row is None:
                return False
            self.delivered(row[2])
            work()
            self._run("delete", {"id": row[0]})
            on_message(row[1], row[2])
            return True

        poll_backoff(stop, take_one)

    def pending(self) -> int:
        return int(self._run("count", {}).fetchone()[0])

    def close(self) -> None:
        self._close()


class _Ceiling:
    """What both SQL ceilings declare: one table, every property held, a consumer per session."""

    kind: ClassVar[str] = "ceiling"
    guarantees: ClassVar[Guarantees] = CEILING_GUARANTEES
    consumes_given_sessions: ClassVar[bool] = True


@dataclass(frozen=True)
class RawPostgresTarget(_Ceiling, PostgresTarget):
    """The PostgreSQL ceiling at ``address`` (a ``postgresql://`` URL)."""

    name: ClassVar[str] = "raw-postgres"

    def _queries(self) -> dict[str, Any]:
        from psycopg import sql

        table = sql.Identifier(table_name(self.namespace))
        index = sql.Identifier(f"{table_name(self.namespace)}_session")
        texts = load_queries("obsqueue.benchmarks", "sql", "raw_postgres.sql")
        return {name: sql.SQL(t).format(table=table, index=index) for name, t in texts.items()}

    def prepare(self) -> None:
        q = self._queries()
        with self.pg_connect() as conn:
            conn.execute(q["create_ceiling"])
            conn.execute(q["index"])
            conn.execute(q["empty"])

    def session(self) -> TargetSession:
        q, conn = self._queries(), self.pg_connect()
        return SqlSession(lambda name, params: conn.execute(q[name], params), conn.close)

    def cleanup(self) -> None:
        with self.pg_connect() as conn:
            conn.execute(self._queries()["drop"])


class _SqliteSession(SqlSession):
    def sessions_param(self, sessions: Sequence[str]) -> object:
        return json.dumps(list(sessions))


@dataclass(frozen=True)
class RawSqliteTarget(_Ceiling, SqliteTarget):
    """The SQLite ceiling: ``address`` is the database file (created; removed by cleanup)."""

    name: ClassVar[str] = "raw-sqlite"

    def _queries(self) -> dict[str, str]:
        table = table_name(self.namespace)
        texts = load_queries("obsqueue.benchmarks", "sql", "raw_sqlite.sql")
        return {name: text.replace("{table}", table) for name, text in texts.items()}

    def sqlite_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.address, isolation_level=None, timeout=10.0, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def prepare(self) -> None:
        q, conn = self._queries(), self.sqlite_connection()
        try:
            conn.executescript(q["create"])
            conn.execute(q["empty"])
        finally:
            conn.close()

    def session(self) -> TargetSession:
        q, conn = self._queries(), self.sqlite_connection()
        return _SqliteSession(lambda name, params: conn.execute(q[name], params), conn.close)
