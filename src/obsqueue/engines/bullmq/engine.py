"""``bullmq+redis://host:port/db`` — each session a BullMQ queue, consumed as BullMQ's manual
workers consume one (the module docstring of ``obsqueue.engines.bullmq`` has the mapping, the
glue and what BullMQ does not give)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import redis.asyncio
from bullmq import UnrecoverableError
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
from obsqueue.engines.bullmq.sessions import SessionQueues, queue_name
from obsqueue.engines.options import (
    MAX_CONNECTIONS,
    SOCKET_TIMEOUT_S,
    positive_seconds,
    to_ms,
)
from obsqueue.engines.redis.link import RedisLink, unlink_matching
from obsqueue.errors import StaleClaimError

__all__ = ["BullmqEngine"]

T = TypeVar("T")

#: How BullMQ's scripts say a job is no longer held by the token given (``finishedErrors``).
_STALE_MARKS = ("Missing key for job", "Missing lock for job", "Lock mismatch", "is not in the")


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
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        stalled_interval_s: float = 0.25,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        stalled_s = positive_seconds("stalled_interval_s", stalled_interval_s)
        redis_url = url.split("+", 1)[1]
        self._link = RedisLink.for_engine(
            self,
            redis_url,
            socket_timeout_s=socket_timeout_s,
            max_connections=max_connections,
            decode_responses=True,
        )
        self._link.check_reachable()
        timeout_s = self._link.socket_timeout_s
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
        self._sessions = SessionQueues(  # used only on the loop's thread
            self._client,
            prefix=self._prefix,
            stalled_ms=to_ms(stalled_s),
            max_stalled=self.options.max_attempts - 1,
            backoff_ms=self.retry_delay_ms,
        )
        self._loop = LoopThread(f"obsqueue-bullmq-{ns}")

    # --------------------------------------------------------------------- loop and errors

    def _call(self, make: Callable[[], Awaitable[T]], *, repeatable: bool) -> T:
        """Run one coroutine on the private loop, with the Redis link's retry and error rules."""

        async def run() -> T:
            return await make()

        return self._link.call(
            lambda: self._loop.run(run(), timeout_s=self._call_timeout_s), repeatable=repeatable
        )

    def _fenced(self, msg: PendingMessageWithId, make: Callable[[], Awaitable[T]]) -> T:
        """A call under ``msg``'s claim: BullMQ's lock errors become ``StaleClaimError``."""
        try:
            return self._call(make, repeatable=False)
        except TypeError as exc:
            if not any(mark in str(exc) for mark in _STALE_MARKS):
                raise
            raise _stale(msg, str(exc)) from None

    def _key(self, name: str) -> str:
        return self._glue + name

    async def _all_sessions(self) -> list[str]:
        return sorted(await self._client.smembers(self._key("sessions")))

    # --------------------------------------------------------------------------- primitives

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        envelope = tasks.observation_envelope(session_id, content_session_id, message)
        return self._call(lambda: self._add(session_id, message, envelope), repeatable=False)

    async def _add(
        self, session_id: str, message: PendingMessage, envelope: dict[str, Any]
    ) -> EnqueueResult:
        queue = await self._sessions.serial_queue(session_id)
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
            opts["backoff"] = {"type": "obsqueue"}  # the strategy in the queues' settings
        if message.tool_use_id is not None:
            key = f"{envelope['content_session_id']}\x1f{message.tool_use_id}"
            opts["deduplication"] = {"id": key}
        job = await queue.add(message.kind, envelope, opts)
        first = message_id(str(job.id))
        if first is None:
            raise RuntimeError(
                f"BullMQ deduplicated into job {job.id!r}, which obsqueue did not write: remove "
                f"it from queue {queue.name!r}"
            )
        return EnqueueResult(first, duplicate=first != number)

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        lease_ms = to_ms(lease_s)
        claimed = self._call(lambda: self._sessions.claim(session_id, lease_ms), repeatable=False)
        if claimed is None:
            return None
        number, job, token = claimed
        return PendingMessageWithId(
            **envelope_fields(job.data),
            id=number,
            session_id=session_id,
            attempt=job.attemptsStarted,
            claim=Claim(int(token), now_ms() + lease_ms, consumer_id),
            enqueued_at_ms=job.timestamp,
        )

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        async def complete() -> None:
            job = await self._sessions.held(msg.session_id, msg.id, _token(msg))
            await job.moveToCompleted(None, _token(msg))

        self._fenced(msg, complete)

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        async def fail() -> None:
            job = await self._sessions.held(msg.session_id, msg.id, _token(msg))
            error = Exception(reason) if retry else UnrecoverableError(reason)
            await job.moveToFailed(error, _token(msg))

        self._fenced(msg, fail)

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        lease_ms = to_ms(lease_s)

        async def extend() -> Any:
            backend = self._sessions.queue(msg.session_id).backend
            return await backend.extendLock(job_id(msg.id), _token(msg), lease_ms)

        if not self._call(extend, repeatable=True):
            raise _stale(msg, "its lock is gone or holds another token")
        assert msg.claim is not None  # checked by the base class
        return Claim(msg.claim.token, now_ms() + lease_ms, msg.claim.consumer_id)

    def _pending_count(self, session_id: str) -> int:
        return self._call(lambda: self._sessions.count(session_id), repeatable=True)

    def _total_depth(self) -> int:
        async def total() -> int:
            sessions = await self._all_sessions()
            return sum(await asyncio.gather(*map(self._sessions.count, sessions)))

        return self._call(total, repeatable=True)

    def _clear_pending(self, session_id: str) -> int:
        return self._call(lambda: self._sessions.clear(self._client, session_id), repeatable=False)

    def _reset_processing(self, session_id: str | None) -> int:
        async def reset() -> int:
            sessions = [session_id] if session_id is not None else await self._all_sessions()
            return sum([await self._sessions.reset(self._client, s) for s in sessions])

        return self._call(reset, repeatable=False)

    # ------------------------------------------------------------------------------ wakeup

    def _wakeup_mark(self, session_id: str) -> object:
        return None  # BullMQ's marker key remembers an add that comes before the wait

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        timeout = round(min(timeout_s, self._link.socket_timeout_s / 2), 3)
        if timeout < 0.001 or self._closed:
            return
        wait = self._sessions.wait(session_id, timeout)
        with contextlib.suppress(redis.exceptions.RedisError):  # a missed hint: the next
            self._loop.run(wait, timeout_s=self._call_timeout_s)  # claim reports an outage

    # ------------------------------------------------------------- oracle, describe, destroy

    def inspect_raw(self) -> list[RawMessage]:
        """Every stored message, read from BullMQ's keys with a plain Redis client."""
        self._check_open()

        def read() -> list[RawMessage]:
            sessions = sorted(self._link.client.smembers(self._key("sessions")))
            bases = [(s, f"{self._prefix}:{queue_name(s)}:") for s in sessions]
            return read_stored(self._link.client, bases)

        return self._link.call(read, repeatable=True)

    def describe(self) -> dict[str, Any]:
        self._check_open()
        return {
            **self._link.describe(
                "bullmq",
                aof_fallback=True,
                api="redis.asyncio on a private event loop",
                stalled_interval_ms=self._sessions.stalled_ms,
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
            self._sessions.forget()

        self._loop.run(forget(), timeout_s=self._call_timeout_s)

    def _close(self) -> None:
        async def teardown() -> None:
            await self._sessions.close()
            await self._client.aclose()
            await self._pool.disconnect()

        try:
            self._loop.close(teardown, timeout_s=self._call_timeout_s)
        finally:
            self._link.close()


def _token(msg: PendingMessageWithId) -> str:
    """The BullMQ lock token of the claim ``msg`` was delivered under."""
    assert msg.claim is not None  # checked by the base class
    return str(msg.claim.token)


def _stale(msg: PendingMessageWithId, why: str) -> StaleClaimError:
    token = msg.claim.token if msg.claim is not None else None
    return StaleClaimError(
        f"message {msg.id} is no longer held by claim {token} ({why}): its lease expired and it "
        "was delivered again, or it was reset; do not acknowledge it"
    )
