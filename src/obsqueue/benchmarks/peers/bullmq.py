"""BullMQ's Python package (``bullmq`` on PyPI) used directly on Redis, as its users run it: one
``Queue``; ``queue.add("record", {session, payload}, {"removeOnComplete": True})``; in each consumer
process a ``Worker`` with ``concurrency`` 1 on asyncio, closed when ``stop`` is set. The processor
reports ``delivered`` as it starts; the harness's ``on_message`` is the worker's ``completed``
event, emitted after the job was moved to completed (removed). The sync interface runs BullMQ on a
private event loop thread.

What BullMQ gives: a job is locked while it runs (``lockDuration`` 30 s, renewed by the
worker) and moved to completed after the processor returns; a SIGKILLed worker's job is found
stalled (``stalledInterval`` 30 s) and moved back to wait — at least once. A ``jobId`` that
exists is not added again: with ``removeOnComplete`` that is dedupe while the job waits or
runs, as obsqueue's. No sessions (groups are BullMQ Pro's): a worker takes any session's job.
``drainDelay`` is 1 s (default 5) so a consumer notices ``stop`` within about a second.
Durability is the server's (``describe()`` reads it back). bullmq 3.x pins ``croniter==2.0.7``,
which pgqueuer (``croniter>=5``) cannot share an environment with: the noxfile installs bullmq
without its pins (``BULLMQ_NO_PINS``); nothing here uses repeatable jobs, which need croniter.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.peers.base import RedisTarget, holding
from obsqueue.benchmarks.peers.loop import LoopThread
from obsqueue.benchmarks.peers.tasks import WORK
from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession

__all__ = ["BullmqTarget"]

#: The job counts that are "stored and not yet acknowledged".
UNFINISHED = ("wait", "active", "delayed", "prioritized", "paused", "waiting-children")


async def _queue(url: str, name: str) -> Any:
    from bullmq import Queue

    return Queue(name, {"connection": url})


class _BullmqSession(TargetSession):
    def __init__(self, url: str, queue_name: str, recovery_s: float | None) -> None:
        self._url, self._name = url, queue_name
        self._recovery_ms = None if recovery_s is None else int(recovery_s * 1000)
        self._loop = LoopThread("bullmq")
        self._queue = self._loop.run(_queue(url, queue_name))

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        opts: dict[str, Any] = {"removeOnComplete": True}
        if dedupe_key is not None:
            opts["jobId"] = dedupe_key
        data = {"session": session_id, "payload": payload}
        self._loop.run(self._queue.add("record", data, opts))

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        self._loop.run(self._work(on_message, stop), timeout_s=None)

    async def _work(self, on_message: OnMessage, stop: threading.Event) -> None:
        from bullmq import Worker

        async def process(job: Any, token: str) -> None:
            del token
            self.delivered(job.data["payload"])
            await asyncio.sleep(WORK["s"])

        opts: dict[str, Any] = {"connection": self._url, "concurrency": 1, "drainDelay": 1}
        if self._recovery_ms is not None:
            opts.update(lockDuration=self._recovery_ms, stalledInterval=self._recovery_ms)
        worker = Worker(self._name, process, opts)
        worker.on("completed", lambda job, _: on_message(job.data["session"], job.data["payload"]))
        try:
            while not stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            await worker.close()

    def pending(self) -> int:
        counts = self._loop.run(self._queue.getJobCounts(*UNFINISHED))
        return sum(int(value) for value in counts.values())

    def close(self) -> None:
        self._loop.run(self._queue.close())
        self._loop.close()


async def _obliterate(url: str, name: str) -> None:
    queue = await _queue(url, name)
    try:
        await queue.obliterate(force=True)
    finally:
        await queue.close()


@dataclass(frozen=True)
class BullmqTarget(RedisTarget):
    """BullMQ on the Redis at ``address``; the queue is ``obsq-<namespace>`` (prefix ``bull``)."""

    name: ClassVar[str] = "bullmq"
    libraries: ClassVar[tuple[str, ...]] = ("bullmq", "redis")
    guarantees: ClassVar[Guarantees] = holding(
        "ack_after_processing",
        "survives_consumer_kill",
        "dedupe",
        notes=(
            "BullMQ (Python): Queue.add(removeOnComplete); a Worker (concurrency 1) on asyncio "
            "in the consumer process",
            "a consumer takes any session's job (groups are BullMQ Pro's)",
            "a killed worker's job is moved back to wait as stalled after stalledInterval (30 s)",
        ),
    )

    @property
    def queue_name(self) -> str:
        return f"obsq-{self.namespace}"

    def prepare(self) -> None:
        asyncio.run(_obliterate(self.address, self.queue_name))

    def session(self) -> TargetSession:
        return _BullmqSession(self.address, self.queue_name, self.recovery_s)

    def cleanup(self) -> None:
        self.prepare()
