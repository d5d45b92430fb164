"""``bullmq+redis://host:port/db`` — each session a BullMQ queue, consumed as BullMQ's manual
workers consume one (the module docstring of ``obsqueue.engines.bullmq`` has the mapping, the
glue and what BullMQ does not give)."""

from __future__ import annotations

import contextlib
import secrets
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import redis.asyncio
from bullmq import Job, Queue, UnrecoverableError, Worker
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from obsqueue.engines import tasks
from obsqueue.engines.base import (
    Capability,
    Claim,
    EnqueueResult,
    ObservationQueueEngine,
    PendingMessage,
    PendingMessageWithId,
    RawMessage,
    now_ms,
)
from obsqueue.engines.bullmq.loop import LoopThread
from obsqueue.engines.bullmq.oracle import envelope_fields, job_id, message_id, read_stored
from obsqueue.engines.redis.link import RedisLink, socket_timeout, to_ms, unlink_matching
from obsqueue.errors import InvalidMessageError, StaleClaimError

__all__ = ["BullmqEngine"]

T = TypeVar("T")

#: How BullMQ's scripts say a job is no longer held by the token given (``finishedErrors``).
_STALE_MARKS = ("Missing key for job", "Missing lock for job", "Lock mismatch", "is not in the")
#: Claims remembered for acknowledgement; older ones are fetched again with ``Job.fromId``.
_REMEMBERED_CLAIMS = 10_000


class BullmqEngine(ObservationQueueEngine):
    """Sessions as BullMQ queues with global concurrency 1; messages as BullMQ jobs."""

    scheme: ClassVar[str] = "bullmq+redis"
    # DEDUPE is not declared: BullMQ deduplicates within one queue, so the same
    # (content_session_id, tool_use_id) in two sessions is two jobs. SERVER_CRASH_DURABLE holds
    # in the durable configuration only (appendfsync always), as for redis://.
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {Capability.DEDUPE}
    server_kind: ClassVar[str | None] = "redis"
    glue: ClassVar[tuple[str, ...]] = (
        "message ids: an INCR counter, passed to Queue.add as jobId 'm<id>'",
        "session registry: a set of session ids (total depth, reset of all, oracle)",
        "startup recovery: delete the session's lock keys, then BullMQ's own stalled-job check",
        "clear: BullMQ's drain script in one MULTI with the counts it removes",
        "fencing token: a random integer used as BullMQ's lock token",
        "private asyncio loop in a thread behind the synchronous contract",
    )

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = 10.0,
        max_connections: int = 512,
        stalled_interval_s: float = 0.25,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        timeout_s = socket_timeout(socket_timeout_s)
        if isinstance(stalled_interval_s, bool) or not (
            isinstance(stalled_interval_s, int | float) and stalled_interval_s > 0
        ):
            raise InvalidMessageError(
                "stalled_interval_s", f"must be seconds > 0, got {stalled_interval_s!r}"
            )
        self._stalled_ms = to_ms(stalled_interval_s)
        redis_url = url.split("+", 1)[1]
        self._link = RedisLink(
            redis_url,
            shown_url=url,
            connect_timeout_s=self.options.connect_timeout_s,
            socket_timeout_s=timeout_s,
            max_connections=max_connections,
            check_open=self._check_open,
            decode_responses=True,
        )
        self._link.check_reachable()
        self._call_timeout_s = timeout_s + self.options.connect_timeout_s + 1.0
        ns = self.options.namespace
        self._prefix = f"obsq-bullmq:{ns}"  # BullMQ's key prefix: <prefix>:<queue>:<type>
        self._glue = f"obsq-bullmq-glue:{ns}:"
        self._pool: Any = redis.asyncio.ConnectionPool.from_url(
            redis_url,
            decode_responses=True,  # as BullMQ's own RedisConnection
            socket_timeout=timeout_s,
            socket_connect_timeout=self.options.connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
        )
        self._client: Any = redis.asyncio.Redis(connection_pool=self._pool)  # stubs lag 5.x
        self._loop = LoopThread(f"obsqueue-bullmq-{ns}")
        # BullMQ objects, touched only on the loop's thread:
        self._queues: dict[str, Queue] = {}
        self._serialised: set[str] = set()
        self._workers: dict[tuple[str, int], Worker] = {}
        self._claims: OrderedDict[tuple[int, str], Job] = OrderedDict()

    # --------------------------------------------------------------------- loop and errors

    def _call(self, make: Callable[[], Coroutine[Any, Any, T]], *, repeatable: bool) -> T:
        """Run one coroutine on the private loop, with the Redis link's retry and error rules."""
        return self._link.call(
            lambda: self._loop.run(make(), timeout_s=self._call_timeout_s), repeatable=repeatable
        )

    def _fenced(self, msg: PendingMessageWithId, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """A call under ``msg``'s claim: BullMQ's lock errors become ``StaleClaimError``."""
        try:
            return self._call(make, repeatable=False)
        except TypeError as exc:
            if not any(mark in str(exc) for mark in _STALE_MARKS):
                raise
            raise _stale(msg, str(exc)) from None

    # ------------------------------------------------------------------- BullMQ's objects

    def _options(self) -> dict[str, Any]:
        strategy = {"backoffStrategy": lambda made, _type, _err, _job: self.retry_delay_ms(made)}
        return {"connection": self._client, "prefix": self._prefix, "settings": strategy}

    def _queue(self, session_id: str) -> Queue:
        queue = self._queues.get(session_id)
        if queue is None:
            queue = self._queues[session_id] = Queue(quote(session_id, safe=""), self._options())
        return queue

    async def _serial_queue(self, session_id: str) -> Queue:
        """The session's queue with BullMQ's global concurrency set to 1 (once per object)."""
        queue = self._queue(session_id)
        if session_id not in self._serialised:
            await queue.setGlobalConcurrency(1)
            self._serialised.add(session_id)
        return queue

    async def _worker(self, session_id: str, lease_ms: int) -> Worker:
        """A manual worker (no processor) for the session, one per lease duration."""
        worker = self._workers.get((session_id, lease_ms))
        if worker is None:
            queue = await self._serial_queue(session_id)
            opts = {
                **self._options(),
                "autorun": False,
                "lockDuration": lease_ms,
                "stalledInterval": self._stalled_ms,
                "maxStalledCount": self.options.max_attempts - 1,
            }
            worker = self._workers[(session_id, lease_ms)] = Worker(queue.name, None, opts)
        return worker

    def _key(self, name: str) -> str:
        return self._glue + name

    # --------------------------------------------------------------------------- primitives

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        envelope = tasks.observation_envelope(session_id, content_session_id, message)
        return self._call(lambda: self._add(session_id, message, envelope), repeatable=False)

    async def _add(
        self, session_id: str, message: PendingMessage, envelope: dict[str, Any]
    ) -> EnqueueResult:
        queue = await self._serial_queue(session_id)
        pipe = self._client.pipeline(transaction=True)
        pipe.incr(self._key("ids"))
        pipe.sadd(self._key("sessions"), session_id)
        number = int((await pipe.execute())[0])
        opts: dict[str, Any] = {
            "jobId": job_id(number),
            "attempts": self.options.max_attempts,
            "removeOnComplete": True,
            "removeOnFail": False,
        }
        if self.options.retry_backoff_s > 0:
            opts["backoff"] = {"type": "obsqueue"}  # the strategy in the worker's settings
        if message.tool_use_id is not None:
            key = f"{envelope['content_session_id']}\x1f{message.tool_use_id}"
            opts["deduplication"] = {"id": key}
        job = await queue.add(message.kind, envelope, opts)
        first = message_id(str(job.id))
        if first is None:
            raise RuntimeError(f"BullMQ returned a job id obsqueue did not write: {job.id!r}")
        return EnqueueResult(first, duplicate=first != number)

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        return self._call(
            lambda: self._claim(session_id, consumer_id, to_ms(lease_s)), repeatable=False
        )

    async def _claim(
        self, session_id: str, consumer_id: str, lease_ms: int
    ) -> PendingMessageWithId | None:
        worker = await self._worker(session_id, lease_ms)
        for _ in range(5):
            token = str(secrets.randbelow(2**53 - 1) + 1)  # "0" would skip BullMQ's lock check
            job = await worker.moveToActive(token)
            if job is None:
                # As a BullMQ worker's stalled-check timer does, rate-limited by BullMQ's key.
                moved = await worker.backend.moveStalledJobsToWait(
                    worker.opts["maxStalledCount"], self._stalled_ms
                )
                if moved:
                    continue
                return None
            if job.deferredFailure:  # stalled too often: failed here, as Worker.processJob does
                await job.moveToFailed(UnrecoverableError(job.deferredFailure), token)
                continue
            return self._delivered(session_id, consumer_id, lease_ms, job, token)
        return None

    def _delivered(
        self, session_id: str, consumer_id: str, lease_ms: int, job: Job, token: str
    ) -> PendingMessageWithId:
        number = message_id(str(job.id))
        if number is None:
            raise RuntimeError(f"session {session_id!r} holds a job obsqueue did not write")
        self._claims[(number, token)] = job
        while len(self._claims) > _REMEMBERED_CLAIMS:
            self._claims.popitem(last=False)
        return PendingMessageWithId(
            **envelope_fields(job.data),
            id=number,
            session_id=session_id,
            attempt=job.attemptsStarted,
            claim=Claim(int(token), now_ms() + lease_ms, consumer_id),
            enqueued_at_ms=job.timestamp,
        )

    async def _held(self, msg: PendingMessageWithId) -> tuple[Job, str]:
        """The BullMQ job ``msg`` was delivered as, and its lock token."""
        assert msg.claim is not None  # checked by the base class
        token = str(msg.claim.token)
        job = self._claims.pop((msg.id, token), None)
        if job is None:
            job = await Job.fromId(self._queue(msg.session_id), job_id(msg.id))
        if job is None:
            raise TypeError(f"Missing key for job {job_id(msg.id)}. (acknowledged already)")
        return job, token

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        async def complete() -> None:
            job, token = await self._held(msg)
            await job.moveToCompleted(None, token)

        self._fenced(msg, complete)

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        async def fail() -> None:
            job, token = await self._held(msg)
            error = Exception(reason) if retry else UnrecoverableError(reason)
            await job.moveToFailed(error, token)

        self._fenced(msg, fail)

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        assert msg.claim is not None  # checked by the base class
        token, lease_ms = str(msg.claim.token), to_ms(lease_s)

        async def extend() -> Any:
            backend = self._queue(msg.session_id).backend
            return await backend.extendLock(job_id(msg.id), token, lease_ms)

        if not self._call(extend, repeatable=True):
            raise _stale(msg, "its lock is gone or holds another token")
        return Claim(msg.claim.token, now_ms() + lease_ms, msg.claim.consumer_id)

    def _pending_count(self, session_id: str) -> int:
        return self._call(lambda: self._count(session_id), repeatable=True)

    async def _count(self, session_id: str) -> int:
        queue = self._queue(session_id)
        counts = await queue.getJobCounts("wait", "paused", "delayed", "prioritized", "active")
        return sum(int(n) for n in counts.values())

    def _total_depth(self) -> int:
        async def total() -> int:
            sessions = await self._client.smembers(self._key("sessions"))
            return sum([await self._count(s) for s in sessions])

        return self._call(total, repeatable=True)

    def _clear_pending(self, session_id: str) -> int:
        async def clear() -> int:
            scripts = self._queue(session_id).scripts
            keys = scripts.getKeys(["wait", "paused", "delayed", "prioritized", "repeat"])
            pipe = self._client.pipeline(transaction=True)
            pipe.llen(keys[0])
            pipe.llen(keys[1])
            pipe.zcard(keys[2])
            pipe.zcard(keys[3])
            await scripts.commands["drain"](keys=keys, args=[scripts.keys[""], "1"], client=pipe)
            return sum(int(n) for n in (await pipe.execute())[:4])

        return self._call(clear, repeatable=False)

    def _reset_processing(self, session_id: str | None) -> int:
        async def reset() -> int:
            if session_id is not None:
                return await self._reset_session(session_id)
            sessions = await self._client.smembers(self._key("sessions"))
            return sum([await self._reset_session(s) for s in sorted(sessions)])

        return self._call(reset, repeatable=False)

    async def _reset_session(self, session_id: str) -> int:
        """Void the session's locks, then let BullMQ's stalled-job check move the jobs back to
        the front of the wait list (where BullMQ puts a stalled job)."""
        queue = self._queue(session_id)
        keys = queue.keys
        active = await self._client.lrange(keys["active"], 0, -1)
        if not active:
            return 0
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(*[f"{queue.toKey(job)}:lock" for job in active])
        pipe.sadd(keys["stalled"], *active)
        pipe.delete(keys["stalled-check"])
        await pipe.execute()
        moved = await queue.backend.moveStalledJobsToWait(
            self.options.max_attempts - 1, self._stalled_ms
        )
        return len(set(moved) & set(active))

    # ------------------------------------------------------------------------------ wakeup

    def _wakeup_mark(self, session_id: str) -> object:
        return None  # BullMQ's marker key remembers an add that comes before the wait

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        """Block on the queue's marker (BZPOPMIN), as a drained BullMQ worker does."""
        timeout = round(min(timeout_s, self._link.socket_timeout_s / 2), 3)
        if timeout < 0.001 or self._closed:
            return

        async def wait() -> None:
            await self._queue(session_id).backend.waitForJob(timeout)

        with contextlib.suppress(redis.exceptions.RedisError):  # a missed hint: the next
            self._loop.run(wait(), timeout_s=self._call_timeout_s)  # claim reports an outage

    # ------------------------------------------------------------- oracle, describe, destroy

    def inspect_raw(self) -> list[RawMessage]:
        """Every stored message, read from BullMQ's keys with a plain Redis client."""
        self._check_open()

        def read() -> list[RawMessage]:
            sessions = sorted(self._link.client.smembers(self._key("sessions")))
            bases = [(s, f"{self._prefix}:{quote(s, safe='')}:") for s in sessions]
            return read_stored(self._link.client, bases)

        return self._link.call(read, repeatable=True)

    def describe(self) -> dict[str, Any]:
        self._check_open()
        return {
            **self._link.describe(
                "bullmq",
                aof_fallback=True,
                api="redis.asyncio on a private event loop",
                stalled_interval_ms=self._stalled_ms,
            ),
            "glue": list(self.glue),
        }

    def destroy(self) -> None:
        """Delete every BullMQ key under the namespace's prefix, and the glue."""
        self._check_open()
        self._link.call(
            lambda: unlink_matching(self._link.client, f"{self._prefix}:*", self._key("*")),
            repeatable=True,
        )

        async def forget() -> None:
            self._serialised.clear()

        self._loop.run(forget(), timeout_s=self._call_timeout_s)

    def _close(self) -> None:
        async def teardown() -> None:
            for worker in self._workers.values():
                await worker.close()
            for queue in self._queues.values():
                await queue.close()
            await self._client.aclose()
            await self._pool.disconnect()

        try:
            self._loop.close(teardown, timeout_s=self._call_timeout_s)
        finally:
            self._link.close()


def _stale(msg: PendingMessageWithId, why: str) -> StaleClaimError:
    token = msg.claim.token if msg.claim is not None else None
    return StaleClaimError(
        f"message {msg.id} is no longer held by claim {token} ({why}): its lease expired and it "
        "was delivered again, or it was reset; do not acknowledge it"
    )
