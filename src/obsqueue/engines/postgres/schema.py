"""The storage of ``postgresql://``: a namespace's schema objects and their statements.

Per namespace, the schema ``<namespace>`` holds ``obsq_messages_v1``, the sequence
``obsq_tokens_v1`` and ``obsq_schema_version`` (the versions applied). ``compose_queries`` reads
the sections of ``engines/postgres/queries.sql`` and composes those identifiers in with
``psycopg.sql.Identifier`` (the fragments first, then the statements that use them).

``Schema.migrate`` first reads the version without a lock, so an engine opening on a current
schema costs two reads; otherwise, in one transaction, it takes ``pg_advisory_xact_lock`` (the
same lock as ``Schema.drop``), reads the version again and applies each ``migrate_v<n>`` section
above it, recording each in ``obsq_schema_version``. Processes opening at once are therefore safe,
and a failure leaves the schema at its previous version.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from obsqueue.engines.postgres.pool import Conn
from obsqueue.sqlfile import load_queries

__all__ = [
    "MESSAGES_TABLE",
    "SCHEMA_VERSION",
    "TOKENS_SEQUENCE",
    "VERSION_TABLE",
    "Schema",
    "compose_queries",
]

SCHEMA_VERSION = 1
MESSAGES_TABLE = "obsq_messages_v1"
TOKENS_SEQUENCE = "obsq_tokens_v1"
VERSION_TABLE = "obsq_schema_version"
#: In this order: a fragment may use the ones before it.
FRAGMENTS = (
    "claimed_cte",
    "target_columns",
    "due",
    "delivered_columns",
    "head_claimed",
    "heads_after",
)


def compose_queries(namespace: str) -> dict[str, bytes]:
    """The sections of ``queries.sql`` with the namespace's identifiers composed in."""
    raw = load_queries(__package__ or "", "queries.sql")
    names = {
        "schema": sql.Identifier(namespace),
        "messages": sql.Identifier(namespace, MESSAGES_TABLE),
        "tokens": sql.Identifier(namespace, TOKENS_SEQUENCE),
        "version_table": sql.Identifier(namespace, VERSION_TABLE),
    }
    # The text is this package's own file, never input: static SQL, only identifiers composed.
    fragments: dict[str, sql.Composed] = {}
    for name in FRAGMENTS:
        fragments[name] = sql.SQL(raw[name]).format(**names, **fragments)
    return {
        name: sql.SQL(text).format(**names, **fragments).as_bytes(None)
        for name, text in raw.items()
        if name not in FRAGMENTS
    }


class Schema:
    """Creates, migrates and drops one namespace's schema, with the engine's composed queries;
    ``lock_name`` names the advisory lock that serialises them across processes."""

    def __init__(self, namespace: str, queries: dict[str, bytes], *, lock_name: str) -> None:
        self._q = queries
        self._lock = {"lock_name": lock_name}
        self._version_table = sql.Identifier(namespace, VERSION_TABLE).as_string(None)

    def migrate(self, conn: Conn) -> None:
        """Create or migrate the namespace's schema; idempotent, safe across processes."""
        if self.version(conn) >= SCHEMA_VERSION:
            return
        with conn.transaction():
            conn.execute(self._q["migrate_lock"], self._lock)
            conn.execute(self._q["migrate_prepare"])
            for version in range(self.version(conn) + 1, SCHEMA_VERSION + 1):
                conn.execute(self._q[f"migrate_v{version}"])
                conn.execute(self._q["migrate_done"], {"version": version})

    def version(self, conn: Conn) -> int:
        """The schema version applied: 0 when there is none (not created, or dropped)."""
        exists = {"version_table": self._version_table}
        if not _scalar(conn, self._q["version_table_exists"], exists):
            return 0
        return _scalar(conn, self._q["schema_version"], {})

    def drop(self, conn: Conn) -> None:
        """Drop the namespace's schema, under the same lock as ``migrate``."""
        with conn.transaction():
            conn.execute(self._q["migrate_lock"], self._lock)
            conn.execute(self._q["destroy"])


def _scalar(conn: Conn, query: bytes, params: dict[str, Any]) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row is not None else 0
