"""pgqueuer on PostgreSQL, as its users run it: ``Queries.install()`` once; producers enqueue with
``SyncQueries.enqueue(entrypoint, payload, headers=…, dedupe_key=…)`` on a sync psycopg driver; in
each consumer process a ``QueueManager`` with one entrypoint, run on its asyncio loop (``qm.run()``
with its defaults: batches of 10, 30 s heartbeat timeout) until ``stop`` sets ``qm.shutdown``.

What pgqueuer gives: a job is ``queued``, then ``picked`` (with a heartbeat) while its handler runs
(the entrypoint reports ``delivered`` as it starts), then moved to the log table by a buffered batch
(``log_jobs``, at most 0.1 s later); the harness's ``on_message`` is called after that batch is
written (a ``Queries`` subclass wraps ``log_jobs``, the one glue here), so the figure includes
pgqueuer's batching. A picked job whose heartbeat is older than ``heartbeat_timeout`` is picked
again — at least once across a SIGKILL. ``dedupe_key`` is unique over queued and picked jobs
(``on_conflict="skip"``), as obsqueue's dedupe is. No sessions: a consumer takes any session's job,
in batches, and runs them at once. The session travels in the job's ``headers``, the payload as the
job's bytes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from obsqueue.benchmarks.peers.base import PostgresTarget, holding
from obsqueue.benchmarks.peers.loop import LoopThread, until_set
from obsqueue.benchmarks.peers.tasks import WORK
from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession

__all__ = ["PgqueuerTarget"]

DEFAULT_PERIOD_S = 30.0  # QueueManager.run's dequeue_timeout and heartbeat_timeout


def _acking_queries(conn: Any, on_message: OnMessage) -> Any:
    from pgqueuer import models, types
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries

    Completed = list[tuple[models.Job, types.JOB_STATUS, models.TracebackRecord | None]]

    class AckingQueries(Queries):
        """``Queries`` that tells the harness of each job once its completion is written."""

        async def log_jobs(self, job_status: Completed) -> None:
            await super().log_jobs(job_status)
            for job, status, _ in job_status:
                if status == "successful":
                    headers, payload = job.headers or {}, job.payload or b""
                    on_message(str(headers["session"]), payload.decode())

    return AckingQueries(PsycopgDriver(conn))


class _PgqueuerSession(TargetSession):
    def __init__(self, dsn: str, entrypoint: str, recovery_s: float | None) -> None:
        import psycopg
        from pgqueuer.db import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries

        self._dsn, self._entrypoint = dsn, entrypoint
        # options["recovery_s"]: how soon a dead consumer's job is stale, and how often an idle
        # consumer looks for one (pgqueuer re-picks stale jobs in its dequeue query); else
        # QueueManager.run's defaults (30 s each)
        period = timedelta(seconds=recovery_s or DEFAULT_PERIOD_S)
        self._heartbeat_timeout = self._dequeue_timeout = period
        self._conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        self._queries = SyncQueries(SyncPsycopgDriver(self._conn))

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        self._queries.enqueue(
            self._entrypoint,
            payload.encode(),
            headers={"session": session_id},
            dedupe_key=dedupe_key,
            on_conflict="skip",
        )

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        loop = LoopThread("pgqueuer")
        try:
            loop.run(self._work(on_message, stop), timeout_s=None)
        finally:
            loop.close()

    async def _work(self, on_message: OnMessage, stop: threading.Event) -> None:
        import psycopg
        from pgqueuer import QueueManager

        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        try:
            qm = QueueManager(_acking_queries(conn, on_message))

            @qm.entrypoint(self._entrypoint)
            async def handle(job: Any) -> None:
                self.delivered((job.payload or b"").decode())
                await asyncio.sleep(WORK["s"])

            watcher = asyncio.create_task(until_set(stop, qm.shutdown))
            try:
                await qm.run(
                    dequeue_timeout=self._dequeue_timeout,
                    heartbeat_timeout=self._heartbeat_timeout,
                )
            finally:
                watcher.cancel()
        finally:
            await conn.close()

    def pending(self) -> int:
        return sum(
            row.count
            for row in self._queries.queue_size()
            if row.entrypoint == self._entrypoint and row.status in ("queued", "picked")
        )

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True)
class PgqueuerTarget(PostgresTarget):
    """pgqueuer's tables in the database at ``address``; the entrypoint is ``obsq_<namespace>``."""

    name: ClassVar[str] = "pgqueuer"
    libraries: ClassVar[tuple[str, ...]] = ("pgqueuer", "psycopg")
    guarantees: ClassVar[Guarantees] = holding(
        "ack_after_processing",
        "survives_consumer_kill",
        "dedupe",
        notes=(
            "pgqueuer: SyncQueries.enqueue; a QueueManager with one entrypoint, qm.run() on "
            "asyncio in the consumer process",
            "a consumer takes any session's jobs, in batches of 10 run at once",
            "a killed consumer's picked job is picked again after heartbeat_timeout (30 s)",
        ),
    )

    @property
    def entrypoint(self) -> str:
        return f"obsq_{self.namespace}"

    async def _prepare(self, *, install: bool) -> None:
        import psycopg
        from pgqueuer.queries import Queries

        async with await psycopg.AsyncConnection.connect(self.address, autocommit=True) as conn:
            queries = Queries.from_psycopg_connection(conn)
            if install and not await queries.schema_is_installed():
                await queries.install()
            if await queries.schema_is_installed():
                await queries.clear_queue(self.entrypoint)
                if not install:  # cleanup: the log rows of this entrypoint's jobs too
                    await queries.clear_queue_log(self.entrypoint)

    def prepare(self) -> None:
        asyncio.run(self._prepare(install=True))

    def session(self) -> TargetSession:
        return _PgqueuerSession(self.address, self.entrypoint, self.recovery_s)

    def cleanup(self) -> None:
        asyncio.run(self._prepare(install=False))
