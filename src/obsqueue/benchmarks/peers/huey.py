"""Huey used directly, on Redis (``RedisHuey``) and on SQLite (``SqliteHuey``), as its users run it:
``@huey.task()`` over ``record``; calling the task enqueues it; in each consumer process the loop of
Huey's own consumer worker (``huey.consumer.Worker`` with the consumer's defaults: first delay 0.1
s, backoff 1.15, at most 10 s; RedisHuey blocks on ``BRPOP`` for 1 s instead) runs with the
harness's ``stop`` as its stop flag. ``delivered`` is a ``SIGNAL_EXECUTING`` handler
(``@huey.signal``, before the task runs), ``on_message`` a ``SIGNAL_COMPLETE`` one, after it
returns.

What Huey gives: ``dequeue`` removes the task from storage before it runs, so there is no
acknowledgement and a SIGKILLed consumer's task is gone; no sessions (a consumer takes any
session's task; several consumers run one session at once); no dedupe. Durability: on Redis,
the server's; on SQLite, WAL with the engine's ``synchronous`` level — ``fsync=True`` (FULL) or
``fsync=False`` (OFF) as Huey spells them; NORMAL and EXTRA, which Huey has no word for, through a
``SqliteStorage`` subclass that sets the pragma on each connection it opens (the one glue here).
"""

from __future__ import annotations

import abc
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.peers.base import PeerTarget, RedisTarget, SqliteTarget, holding
from obsqueue.benchmarks.peers.tasks import record
from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession

__all__ = ["HueyRedisTarget", "HueySqliteTarget"]

#: Huey's consumer defaults (``huey_consumer -d 0.1 -b 1.15 -m 10``).
INITIAL_DELAY_S, BACKOFF, MAX_DELAY_S = 0.1, 1.15, 10.0


class _HueySession(TargetSession):
    def __init__(self, huey: Any) -> None:
        from huey import signals

        self._huey = huey
        self._task = huey.task(name="record")(record)
        self._on_message: OnMessage | None = None
        huey.signal(signals.SIGNAL_EXECUTING)(self._executing)
        huey.signal(signals.SIGNAL_COMPLETE)(self._completed)

    def _executing(self, signal: str, task: Any) -> None:
        if self._on_message is not None:  # consuming: report the task Huey is about to run
            self.delivered(task.args[1])

    def _completed(self, signal: str, task: Any) -> None:
        if self._on_message is not None:
            self._on_message(*task.args)

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        self._task(session_id, payload)

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        from huey.consumer import Worker

        self._on_message = on_message
        worker = Worker(self._huey, stop, INITIAL_DELAY_S, MAX_DELAY_S, BACKOFF)
        worker.initialize()
        try:
            while not stop.is_set():
                worker.loop()
        finally:
            worker.shutdown()
            self._on_message = None

    def pending(self) -> int:
        return int(self._huey.pending_count())

    def close(self) -> None:
        self._huey.storage.close()


def _huey_guarantees(usage: str) -> Guarantees:
    return holding(
        notes=(
            usage,
            "a consumer takes any session's task (Huey has no sessions)",
            "dequeue removes the task before it runs: no ack; a killed consumer's task is lost",
        ),
    )


class _HueyTarget(PeerTarget):
    """Huey under the name ``obsq-<namespace>``, whatever its storage."""

    @abc.abstractmethod
    def huey(self) -> Any:
        """A new Huey instance on this target's storage."""

    def prepare(self) -> None:
        self.huey().flush()

    def session(self) -> TargetSession:
        return _HueySession(self.huey())


@dataclass(frozen=True)
class HueyRedisTarget(_HueyTarget, RedisTarget):
    """``RedisHuey`` on the Redis at ``address``."""

    name: ClassVar[str] = "huey"
    libraries: ClassVar[tuple[str, ...]] = ("huey", "redis")
    guarantees: ClassVar[Guarantees] = _huey_guarantees(
        "Huey: RedisHuey, @huey.task(); huey.consumer.Worker loop (BRPOP) in the consumer"
    )

    def huey(self) -> Any:
        from huey import RedisHuey

        return RedisHuey(f"obsq-{self.namespace}", url=self.address, results=False)

    def cleanup(self) -> None:
        self.prepare()


@dataclass(frozen=True)
class HueySqliteTarget(_HueyTarget, SqliteTarget):
    """``SqliteHuey`` on the file ``address`` (WAL), at ``options["synchronous"]`` (FULL)."""

    name: ClassVar[str] = "huey-sqlite"
    libraries: ClassVar[tuple[str, ...]] = ("huey",)
    guarantees: ClassVar[Guarantees] = _huey_guarantees(
        "Huey: SqliteHuey (WAL), @huey.task(); huey.consumer.Worker loop (polling from 0.1 s, "
        "x1.15 up to 10 s) in the consumer"
    )

    def huey(self) -> Any:
        from huey import SqliteHuey
        from huey.storage import SqliteStorage

        name, level = f"obsq-{self.namespace}", self.synchronous
        if level in ("FULL", "OFF"):
            return SqliteHuey(name, filename=self.address, fsync=level == "FULL", results=False)

        class LevelledSqliteStorage(SqliteStorage):  # type: ignore[misc]
            def _create_connection(self) -> sqlite3.Connection:
                conn: sqlite3.Connection = super()._create_connection()
                conn.execute(f"PRAGMA synchronous={level}")
                return conn

        return SqliteHuey(
            name, filename=self.address, storage_class=LevelledSqliteStorage, results=False
        )

    def sqlite_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = self.huey().storage.conn
        return conn
