"""BullMQ's objects for one engine: a ``Queue`` per session, manual ``Worker``s, claimed jobs.

Everything here runs on the engine's private event loop (``loop.py``), so the caches need no
locks. The objects share the engine's one ``redis.asyncio`` client, passed to BullMQ as its
``connection``; BullMQ's ``close()`` of a queue or worker releases the client's connection, and
the engine closes the pool last.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from bullmq import Job, Queue, UnrecoverableError, Worker

from obsqueue.engines.bullmq.oracle import is_envelope, job_id, message_id

__all__ = ["SessionQueues", "queue_name"]

#: Claims remembered for acknowledgement; older ones are fetched again with ``Job.fromId``.
_REMEMBERED_CLAIMS = 10_000
#: Jobs a claim may set aside (stalled too often, or not obsqueue's) before it gives up.
_SET_ASIDE_PER_CLAIM = 5


def queue_name(session_id: str) -> str:
    """The BullMQ queue of a session: its id percent-encoded (queue names may not hold ``:``)."""
    return quote(session_id, safe="")


class SessionQueues:
    """The session queues (global concurrency 1), their manual workers, and claimed jobs."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        stalled_ms: int,
        max_stalled: int,
        backoff_ms: Callable[[int], int],
    ) -> None:
        strategy = {"backoffStrategy": lambda made, _type, _err, _job: backoff_ms(made)}
        self.options: dict[str, Any] = {
            "connection": client,
            "prefix": prefix,
            "settings": strategy,
        }
        self.stalled_ms = stalled_ms
        self.max_stalled = max_stalled
        self._queues: dict[str, Queue] = {}
        self._serialised: set[str] = set()
        self._workers: dict[tuple[str, int], Worker] = {}
        self._claims: OrderedDict[tuple[int, str], Job] = OrderedDict()

    def queue(self, session_id: str) -> Queue:
        queue = self._queues.get(session_id)
        if queue is None:
            queue = self._queues[session_id] = Queue(queue_name(session_id), self.options)
        return queue

    async def serial_queue(self, session_id: str) -> Queue:
        """The session's queue with BullMQ's global concurrency set to 1 (once per object)."""
        queue = self.queue(session_id)
        if session_id not in self._serialised:
            await queue.setGlobalConcurrency(1)
            self._serialised.add(session_id)
        return queue

    async def worker(self, session_id: str, lease_ms: int) -> Worker:
        """A manual worker (no processor, not running) for the session, one per lease."""
        worker = self._workers.get((session_id, lease_ms))
        if worker is None:
            queue = await self.serial_queue(session_id)
            opts = {
                **self.options,
                "autorun": False,
                "lockDuration": lease_ms,
                "stalledInterval": self.stalled_ms,
                "maxStalledCount": self.max_stalled,
            }
            worker = self._workers[(session_id, lease_ms)] = Worker(queue.name, None, opts)
        return worker

    async def claim(self, session_id: str, lease_ms: int) -> tuple[int, Job, str] | None:
        """Move the session's head to active under a new lock token, as ``getNextJob`` does:
        ``(message id, job, token)``, or None when the head is busy or the queue empty."""
        worker = await self.worker(session_id, lease_ms)
        for _ in range(_SET_ASIDE_PER_CLAIM):
            token = str(secrets.randbelow(2**53 - 1) + 1)  # "0" would skip BullMQ's lock check
            job = await worker.moveToActive(token)
            if job is None:
                # What a worker's stalled-check timer runs; BullMQ rate-limits it by a key.
                if await worker.backend.moveStalledJobsToWait(self.max_stalled, self.stalled_ms):
                    continue
                return None
            number = message_id(str(job.id))
            if job.deferredFailure:  # stalled too often: failed here, as Worker.processJob does
                await job.moveToFailed(UnrecoverableError(job.deferredFailure), token)
            elif number is None or not is_envelope(job.data):
                await job.moveToFailed(UnrecoverableError(_FOREIGN), token)
            else:
                self._remember(number, token, job)
                return number, job, token
        return None

    def _remember(self, number: int, token: str, job: Job) -> None:
        self._claims[(number, token)] = job
        while len(self._claims) > _REMEMBERED_CLAIMS:
            self._claims.popitem(last=False)

    async def held(self, session_id: str, number: int, token: str) -> Job:
        """The job delivered under ``token``; raises BullMQ's "Missing key" if it is gone."""
        job = self._claims.pop((number, token), None)
        if job is None:
            job = await Job.fromId(self.queue(session_id), job_id(number))
        if job is None:
            raise TypeError(f"Missing key for job {job_id(number)}. (acknowledged already)")
        return job

    async def count(self, session_id: str) -> int:
        """Jobs of the session that are waiting, delayed or active, as BullMQ counts them."""
        queue = self.queue(session_id)
        counts = await queue.getJobCounts("wait", "paused", "delayed", "prioritized", "active")
        return sum(int(n) for n in counts.values())

    async def clear(self, client: Any, session_id: str) -> int:
        """BullMQ's drain script (waiting and delayed jobs, not the active one) in one MULTI
        with the counts of what it removes."""
        scripts = self.queue(session_id).scripts
        keys = scripts.getKeys(["wait", "paused", "delayed", "prioritized", "repeat"])
        pipe = client.pipeline(transaction=True)
        pipe.llen(keys[0])
        pipe.llen(keys[1])
        pipe.zcard(keys[2])
        pipe.zcard(keys[3])
        await scripts.commands["drain"](keys=keys, args=[scripts.keys[""], "1"], client=pipe)
        return sum(int(n) for n in (await pipe.execute())[:4])

    async def reset(self, client: Any, session_id: str) -> int:
        """Void the session's locks, then let BullMQ's stalled-job check move its active jobs
        back to the front of the wait list (where BullMQ puts a stalled job)."""
        queue = self.queue(session_id)
        keys = queue.keys
        active = await client.lrange(keys["active"], 0, -1)
        if not active:
            return 0
        pipe = client.pipeline(transaction=True)
        pipe.delete(*[f"{queue.toKey(job)}:lock" for job in active])
        pipe.sadd(keys["stalled"], *active)
        pipe.delete(keys["stalled-check"])
        await pipe.execute()
        moved = await queue.backend.moveStalledJobsToWait(self.max_stalled, self.stalled_ms)
        return len(set(moved) & set(active))

    async def wait(self, session_id: str, timeout_s: float) -> None:
        """Block on the queue's marker (BZPOPMIN), as a drained BullMQ worker does."""
        await self.queue(session_id).backend.waitForJob(timeout_s)

    def forget(self) -> None:
        """After the keys were deleted: set global concurrency again on next use."""
        self._serialised.clear()
        self._claims.clear()

    async def close(self) -> None:
        for worker in self._workers.values():
            await worker.close()
        for queue in self._queues.values():
            await queue.close()


_FOREIGN = (
    "set aside by obsqueue: this job was not enqueued through obsqueue (no m<id> job id or "
    "envelope); add jobs to obsqueue's queues with engine.enqueue"
)
