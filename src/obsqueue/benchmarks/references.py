"""Raw references: the backend doing the drain workload with the fewest commands (the ceiling).

Each keeps only what any at-least-once queue needs — a claim that leaves the message visible
until it is deleted — and none of what obsqueue adds (leases, fencing tokens, dedupe, wakeup,
retries). Each runs in the same durability configuration as the engine it is compared with:

* PostgreSQL: ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``, then
  ``DELETE`` — two autocommitted statements per message (``sql/raw_postgres.sql``);
* SQLite: the same two statements on a WAL file with ``synchronous=FULL``
  (``sql/raw_sqlite.sql``);
* Redis: ``RPUSH``; ``LMOVE`` to a processing list; ``LREM`` from it.

The backend is the last part of the URL scheme (``huey+redis`` -> redis).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from obsqueue.sqlfile import load_queries

__all__ = ["Reference", "reference_for"]

SESSION = "bench-session"


@dataclass(frozen=True)
class Reference:
    """A raw loop on one backend at one address."""

    name: str
    backend: str
    target: str

    def run(self, messages: int, payload: Any) -> dict[str, Any]:
        runner = {"postgres": _postgres, "sqlite": _sqlite, "redis": _redis}[self.backend]
        enqueue_s, drain_s = runner(self.target, messages, json.dumps(payload))
        return {
            "name": self.name,
            "enqueue_per_s": round(messages / enqueue_s, 1),
            "drained_per_s": round(messages / drain_s, 1),
        }


def reference_for(url: str, server_url: str | None) -> Reference | None:
    """The raw reference for an engine URL, or None (an in-process engine has none)."""
    parts = urlsplit(url)
    backend = parts.scheme.lower().rsplit("+", 1)[-1]
    if backend in ("postgresql", "postgres"):
        target = server_url or f"postgresql://{parts.netloc}{parts.path}"
        return Reference("raw SKIP LOCKED claim; delete", "postgres", target)
    if backend == "redis":
        target = server_url or f"redis://{parts.netloc}{parts.path}"
        return Reference("raw RPUSH; LMOVE; LREM", "redis", target)
    if backend == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return Reference("raw SQLite claim; delete", "sqlite", f"{path}.raw-reference")
    return None


def _timed_loops(enqueue: Any, claim_and_delete: Any, messages: int) -> tuple[float, float]:
    start = time.perf_counter()
    for _ in range(messages):
        enqueue()
    enqueued = time.perf_counter()
    for _ in range(messages):
        if not claim_and_delete():
            raise RuntimeError("the raw reference found its queue empty before the end")
    return enqueued - start, time.perf_counter() - enqueued


def _sql_loops(
    execute: Any, q: dict[str, Any], params: dict[str, str], messages: int
) -> tuple[float, float]:
    """The SQL loops on one connection: INSERT; then claim (UPDATE … RETURNING) and DELETE."""

    def claim_and_delete() -> bool:
        row = execute(q["claim"], params).fetchone()
        if row is None:
            return False
        execute(q["delete"], {"id": row[0]})
        return True

    return _timed_loops(lambda: execute(q["enqueue"], params), claim_and_delete, messages)


def _postgres(dsn: str, messages: int, payload: str) -> tuple[float, float]:
    import psycopg
    from psycopg import sql

    table = sql.Identifier(f"obsq_raw_{uuid.uuid4().hex[:10]}")
    index = sql.Identifier(f"obsq_raw_idx_{uuid.uuid4().hex[:10]}")
    q = {
        name: sql.SQL(text).format(table=table, index=index)
        for name, text in load_queries("obsqueue.benchmarks", "sql", "raw_postgres.sql").items()
    }
    params = {"session_id": SESSION, "payload": payload}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(q["create"])
        conn.execute(q["index"])
        try:
            return _sql_loops(conn.execute, q, params, messages)
        finally:
            conn.execute(q["drop"])


def _sqlite(path: str, messages: int, payload: str) -> tuple[float, float]:
    table = f"obsq_raw_{uuid.uuid4().hex[:10]}"
    q = {
        name: text.replace("{table}", table)
        for name, text in load_queries("obsqueue.benchmarks", "sql", "raw_sqlite.sql").items()
    }
    params = {"session_id": SESSION, "payload": payload}
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(q["create"])
        return _sql_loops(conn.execute, q, params, messages)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)


def _redis(url: str, messages: int, payload: str) -> tuple[float, float]:
    import redis

    client = redis.Redis.from_url(url)
    prefix = f"obsq_raw:{uuid.uuid4().hex[:10]}"
    pending, processing = f"{prefix}:pending", f"{prefix}:processing"
    try:

        def claim_and_delete() -> bool:
            item = client.lmove(pending, processing, "LEFT", "RIGHT")
            if item is None:
                return False
            client.lrem(processing, 1, item)
            return True

        return _timed_loops(lambda: client.rpush(pending, payload), claim_and_delete, messages)
    finally:
        client.delete(pending, processing)
        client.close()
