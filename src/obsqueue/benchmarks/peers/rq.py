"""RQ used directly on Redis, as its users run it: one queue; ``queue.enqueue(record, session,
payload)``; in each consumer process an ``rq.Worker`` (the default, forking one work horse per
job) working the queue (``work(max_jobs=…, max_idle_time=1)`` again and again until ``stop``).

RQ has no notion of a session: every worker takes the oldest job of the queue, so a consumer
given some sessions takes any session's jobs, and two workers run one session's jobs at once.
A job waits in the queue's list, then in the ``StartedJobRegistry`` while it runs. In the worker
process, ``delivered`` is reported once ``Worker.prepare_execution`` has registered the job (before
the work horse is forked) and ``on_message`` after the work horse exits and the job reads
``finished``. A SIGKILLed worker's job is moved to the ``FailedJobRegistry`` as abandoned when
its heartbeat lapses — not run again. Enqueueing an existing ``job_id`` replaces the job, so
there is no dedupe. Durability is the server's (``describe()`` reads it back).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.peers.base import RedisTarget, holding
from obsqueue.benchmarks.peers.tasks import record
from obsqueue.benchmarks.targets import Guarantees, OnDelivered, OnMessage, TargetSession

__all__ = ["RqTarget"]

#: The queue's registries (``Queue.<kind>_job_registry``), emptied by ``cleanup``.
REGISTRIES = ("started", "failed", "finished", "deferred", "ready", "scheduled", "canceled")
JOBS_PER_WORK = 50  # jobs per Worker.work() call: how often ``stop`` is looked at while busy


def _worker_class() -> type[Any]:
    import rq
    from rq.job import JobStatus

    class ReportingWorker(rq.Worker):
        """``rq.Worker`` that reports each finished job to the harness, in the worker process."""

        on_message: OnMessage | None = None
        on_delivered: OnDelivered | None = None

        def prepare_execution(self, job: Any) -> Any:
            execution = super().prepare_execution(job)  # the job is in the StartedJobRegistry
            if self.on_delivered is not None:
                self.on_delivered(job.args[1])
            return execution

        def execute_job(self, job: Any, queue: Any) -> None:
            super().execute_job(job, queue)
            if self.on_message is not None and job.get_status(refresh=True) == JobStatus.FINISHED:
                self.on_message(*job.args)

        def _install_signal_handlers(self) -> None:
            if threading.current_thread() is threading.main_thread():
                super()._install_signal_handlers()  # type: ignore[no-untyped-call]

    return ReportingWorker


class _RqSession(TargetSession):
    def __init__(self, url: str, queue_name: str) -> None:
        import redis
        import rq

        self._redis = redis.Redis.from_url(url, socket_connect_timeout=10)
        self._queue = rq.Queue(queue_name, connection=self._redis)

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        self._queue.enqueue(record, session_id, payload)

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        worker = _worker_class()([self._queue], connection=self._redis)
        worker.on_message, worker.on_delivered = on_message, self.delivered
        while not stop.is_set():
            worker.work(
                burst=False, max_jobs=JOBS_PER_WORK, max_idle_time=1, logging_level="WARNING"
            )

    def pending(self) -> int:
        return int(self._queue.count) + int(self._queue.started_job_registry.count)

    def close(self) -> None:
        self._redis.close()


@dataclass(frozen=True)
class RqTarget(RedisTarget):
    """RQ on the Redis at ``address``; the queue is ``obsq-<namespace>``."""

    name: ClassVar[str] = "rq"
    libraries: ClassVar[tuple[str, ...]] = ("rq", "redis")
    guarantees: ClassVar[Guarantees] = holding(
        "ack_after_processing",
        notes=(
            "RQ: one queue, queue.enqueue(record, …); rq.Worker (fork per job) "
            "work(max_jobs, max_idle_time) in the consumer process",
            "a consumer takes any session's job (RQ has no sessions)",
            "a killed worker's job goes to the FailedJobRegistry (abandoned), not back to "
            "the queue",
        ),
    )

    @property
    def queue_name(self) -> str:
        return f"obsq-{self.namespace}"

    def prepare(self) -> None:
        self.cleanup()

    def session(self) -> TargetSession:
        return _RqSession(self.address, self.queue_name)

    def cleanup(self) -> None:
        """Delete the queue, its jobs and every registry of it: a killed worker's job stays in
        the ``StartedJobRegistry`` (then the failed one), which ``pending`` counts."""
        import rq
        from rq.executions import ExecutionRegistry

        with self.redis_client() as client:
            queue = rq.Queue(self.queue_name, connection=client)
            registries = [getattr(queue, f"{kind}_job_registry") for kind in REGISTRIES]
            ids = {i for r in registries for i in r.get_job_ids(cleanup=False)}
            ids |= set(queue.intermediate_queue.get_job_ids())
            keys = [r.key for r in registries] + [queue.intermediate_queue_key]
            keys += [
                k for i in ids for k in (rq.job.Job.key_for(i), ExecutionRegistry(i, client).key)
            ]
            queue.delete(delete_jobs=True)
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
