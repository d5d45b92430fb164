"""What the targets of one backend share: how they reach it, and ``describe()`` — library
versions plus the durability settings read from the live backend (``settings.py``)."""

from __future__ import annotations

import abc
import os
import sqlite3
from typing import Any, ClassVar

from obsqueue.benchmarks.peers.settings import (
    describe_target,
    postgres_durability,
    redis_durability,
    sqlite_durability,
    sqlite_synchronous,
)
from obsqueue.benchmarks.peers.tasks import WORK
from obsqueue.benchmarks.targets import Guarantees, TargetSession, WorkloadTarget

__all__ = ["PeerTarget", "PostgresTarget", "RedisTarget", "SqliteTarget", "holding"]

CONNECT_TIMEOUT_S = 10
PROPERTIES = (
    "per_session_fifo",
    "one_consumer_per_session",
    "ack_after_processing",
    "survives_consumer_kill",
    "dedupe",
)


def holding(*held: str, notes: tuple[str, ...]) -> Guarantees:
    """``Guarantees`` with the ``held`` properties true and the others false; the first of the
    ``notes`` says in one line how the library is used (``describe()["usage"]``)."""
    unknown = set(held) - set(PROPERTIES)
    if unknown:
        raise ValueError(f"unknown properties {sorted(unknown)}; known: {PROPERTIES}")
    return Guarantees(**{name: name in held for name in PROPERTIES}, notes=notes)


class PeerTarget(WorkloadTarget):
    """A ceiling or peer. Two ``options`` every one of them takes:

    * ``work_s`` (default 0): seconds each message's work takes in a consumer (the harness
      measures the queue with none; a test kills a consumer in the middle of one);
    * ``recovery_s`` (default None: the library's own): for the peers that return a dead
      consumer's message (pgqueuer, Dramatiq, BullMQ), how soon — their heartbeat or stalled
      check period; the others have nothing to set.

    ``consumes_given_sessions``: whether a consumer given some sessions (the harness gives
    consumer i ``sessions[i::consumers]``) consumes only those. The peers route by queue, not by
    session, so theirs take any session's message — their ``Guarantees.notes`` say so — and
    every message is still drained, since every consumer reads the one queue."""

    kind: ClassVar[str] = "peer"  # a ceiling says "ceiling"
    consumes_given_sessions: ClassVar[bool] = False

    @property
    def work_s(self) -> float:
        return float(self.options.get("work_s", 0.0))

    @property
    def recovery_s(self) -> float | None:
        value = self.options.get("recovery_s")
        return None if value is None else float(value)

    def open(self) -> TargetSession:
        WORK["s"] = self.work_s
        return self.session()

    @abc.abstractmethod
    def session(self) -> TargetSession:
        """Connect from the current process (``open`` after the process's work is set)."""


class RedisTarget(PeerTarget):
    """A target on the Redis server at ``address`` (a ``redis://`` URL)."""

    backend: ClassVar[str] = "redis"
    libraries: ClassVar[tuple[str, ...]] = ("redis",)

    def redis_client(self) -> Any:
        import redis

        return redis.Redis.from_url(
            self.address, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=30
        )

    def describe(self) -> dict[str, Any]:
        with self.redis_client() as client:
            return describe_target(self, redis_durability(client), *self.libraries)


class PostgresTarget(PeerTarget):
    """A target in the PostgreSQL database at ``address`` (a ``postgresql://`` URL)."""

    backend: ClassVar[str] = "postgres"
    libraries: ClassVar[tuple[str, ...]] = ("psycopg",)

    def pg_connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.address, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    def describe(self) -> dict[str, Any]:
        with self.pg_connect() as conn:
            durability = postgres_durability(conn.execute)
        return describe_target(self, durability, *self.libraries)


class SqliteTarget(PeerTarget):
    """A target in the SQLite file at ``address``, at ``options["synchronous"]`` (FULL)."""

    backend: ClassVar[str] = "sqlite"
    libraries: ClassVar[tuple[str, ...]] = ()

    @property
    def synchronous(self) -> str:
        return sqlite_synchronous(self.options.get("synchronous", "FULL"))

    @abc.abstractmethod
    def sqlite_connection(self) -> sqlite3.Connection:
        """A new connection set up as the target's own are (the caller closes it)."""

    def cleanup(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.address + suffix):
                os.remove(self.address + suffix)

    def describe(self) -> dict[str, Any]:
        conn = self.sqlite_connection()
        try:
            durability = sqlite_durability(conn)
        finally:
            conn.close()
        return describe_target(self, durability, *self.libraries, sqlite=sqlite3.sqlite_version)
