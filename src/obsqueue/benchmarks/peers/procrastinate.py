"""procrastinate on PostgreSQL, as its users run a per-session stream: ``app.task(queue=…)``
over ``record``; producers defer with ``task.configure(lock=session_id,
queueing_lock=dedupe_key).defer(…)`` on an ``App`` opened synchronously; in each consumer process
``app.run_worker_async(queues=[…], concurrency=1, delete_jobs="successful")`` on asyncio,
cancelled (procrastinate's graceful stop) when ``stop`` is set.

What procrastinate gives: ``lock`` — "no two jobs with the same lock can run simultaneously",
and the worker fetches the oldest job whose lock is free — so one session's jobs run one at a
time, in order, across every worker: per-session FIFO and one consumer per session, as obsqueue
has them. The task reports ``delivered`` as it starts. A job is ``doing`` until the worker
finishes it, after the task returns (the harness's
``on_message`` is called once that write has returned: a ``JobManager`` subclass wraps
``finish_job``, the one glue here). A SIGKILLed worker's job stays ``doing`` — and keeps its lock,
so its session stops — until someone calls ``retry_stalled_jobs`` (procrastinate finds stalled
jobs from worker heartbeats but does not retry them by itself). ``queueing_lock`` refuses a
second *waiting* job with the same key (``AlreadyEnqueued``), not one while the first runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.peers.base import PostgresTarget, holding
from obsqueue.benchmarks.peers.loop import LoopThread, until_set
from obsqueue.benchmarks.peers.tasks import record
from obsqueue.benchmarks.targets import Guarantees, OnDelivered, OnMessage, TargetSession

__all__ = ["ProcrastinateTarget"]


def _app(
    dsn: str,
    queue: str,
    on_message: OnMessage | None = None,
    on_delivered: OnDelivered | None = None,
) -> tuple[Any, Any]:
    """An ``App`` with the ``record`` task; with ``on_message``, finished jobs are reported,
    with ``on_delivered``, each job as the task starts."""
    import procrastinate
    from procrastinate.manager import JobManager

    class AckingJobManager(JobManager):
        async def finish_job(self, job: Any, status: Any, delete_job: bool) -> None:
            await super().finish_job(job, status, delete_job)
            if on_message is not None and status == procrastinate.jobs.Status.SUCCEEDED:
                on_message(job.task_kwargs["session_id"], job.task_kwargs["payload"])

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    app.job_manager = AckingJobManager(app.connector)

    def run(session_id: str, payload: str) -> None:
        if on_delivered is not None:
            on_delivered(payload)
        record(session_id, payload)

    task = app.task(name="record", queue=queue)(run)
    return app, task


class _ProcrastinateSession(TargetSession):
    def __init__(self, dsn: str, queue: str) -> None:
        self._dsn, self._queue = dsn, queue
        self._app, self._task = _app(dsn, queue)
        self._app.open()

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        deferrer = self._task.configure(lock=session_id, queueing_lock=dedupe_key)
        with contextlib.suppress(AlreadyEnqueued):
            deferrer.defer(session_id=session_id, payload=payload)

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        loop = LoopThread("procrastinate")
        try:
            loop.run(self._work(on_message, stop), timeout_s=None)
        finally:
            loop.close()

    async def _work(self, on_message: OnMessage, stop: threading.Event) -> None:
        app, _ = _app(self._dsn, self._queue, on_message, self.delivered)
        async with app.open_async():
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=[self._queue],
                    concurrency=1,
                    delete_jobs="successful",
                    install_signal_handlers=False,
                )
            )
            stopped = asyncio.Event()
            watcher = asyncio.create_task(until_set(stop, stopped))
            await asyncio.wait([worker, watcher], return_when=asyncio.FIRST_COMPLETED)
            worker.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def pending(self) -> int:
        rows = self._app.job_manager.list_queues(queue=self._queue)
        return sum(int(row["todo"]) + int(row["doing"]) for row in rows)

    def close(self) -> None:
        self._app.close()


@dataclass(frozen=True)
class ProcrastinateTarget(PostgresTarget):
    """procrastinate's schema in the database at ``address``; the queue is ``obsq_<namespace>``."""

    name: ClassVar[str] = "procrastinate"
    libraries: ClassVar[tuple[str, ...]] = ("procrastinate", "psycopg")
    guarantees: ClassVar[Guarantees] = holding(
        "per_session_fifo",
        "one_consumer_per_session",
        "ack_after_processing",
        notes=(
            "procrastinate: task.configure(lock=session).defer(); app.run_worker_async("
            "concurrency=1) in the consumer process",
            "a consumer takes any session's job (one queue; the lock keeps a session on one "
            "worker at a time, not on the consumer given it)",
            "a killed worker's job stays 'doing' and holds its session's lock until "
            "retry_stalled_jobs is called",
            "queueing_lock dedupes only while the first job waits, not while it runs",
        ),
    )

    @property
    def queue(self) -> str:
        return f"obsq_{self.namespace}"

    def _execute(self, *statements: tuple[str, tuple[Any, ...]]) -> list[Any]:
        with self.pg_connect() as conn:
            return [conn.execute(text, params).fetchone() for text, params in statements]

    def prepare(self) -> None:
        (installed,) = self._execute(("SELECT to_regclass('procrastinate_jobs')", ()))
        if installed[0] is None:
            app, _ = _app(self.address, self.queue)
            with app.open():
                app.schema_manager.apply_schema()
        self.cleanup()

    def session(self) -> TargetSession:
        return _ProcrastinateSession(self.address, self.queue)

    def cleanup(self) -> None:
        (installed,) = self._execute(("SELECT to_regclass('procrastinate_jobs')", ()))
        if installed[0] is not None:
            self._execute(
                ("DELETE FROM procrastinate_jobs WHERE queue_name = %s RETURNING 1", (self.queue,))
            )
