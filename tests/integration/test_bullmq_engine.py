"""The BullMQ adapter's own mechanics, on a throwaway redis-server.

The shared conformance suite checks the contract; these tests check what is particular to
``bullmq+redis://``: that messages are BullMQ jobs a BullMQ user's own ``Queue`` and ``Worker``
see and process, that each session queue is serialised by BullMQ's global concurrency, that
stall recovery and reset go through BullMQ's stalled-job check, the two BullMQ behaviours that
decide the matrix (a retried job goes to the back; dedupe is per queue), a clean close of the
private event loop, and describe().
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from bullmq import Queue, Worker

from obsqueue.engines import open_engine
from obsqueue.engines.base import PendingMessage, PendingMessageWithId
from obsqueue.engines.bullmq.engine import BullmqEngine
from obsqueue.errors import EngineClosedError, EngineUnavailableError
from obsqueue.servers.base import free_port
from obsqueue.servers.redis import RedisServer, throwaway_redis
from tests.conftest import throwaway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = throwaway(lambda: throwaway_redis(durability="durable"), "redis-server")
    yield srv
    srv.stop()


@pytest.fixture
def engine(server: RedisServer) -> Iterator[BullmqEngine]:
    eng = BullmqEngine(
        f"bullmq+{server.url}", namespace=f"t{uuid.uuid4().hex[:12]}", retry_backoff_s=0
    )
    yield eng
    if not eng.closed:
        eng.destroy()
        eng.close()


def _msg(key: str, tool_use_id: str | None = None) -> PendingMessage:
    return PendingMessage(kind="observation", tool_use_id=tool_use_id, payload={"key": key})


def _claim(engine: BullmqEngine, session: str, **kwargs: Any) -> PendingMessageWithId:
    msg = engine.claim_next(session, **kwargs)
    assert msg is not None
    return msg


def _keys(engine: BullmqEngine, session: str) -> list[str]:
    """Drain the session, acking each message; return the keys in delivery order."""
    keys = []
    while (msg := engine.claim_next(session)) is not None:
        keys.append(msg.payload["key"])
        engine.mark_processed(msg)
    return keys


def _bullmq_queue(engine: BullmqEngine, server: RedisServer, session: str) -> dict[str, Any]:
    """What a BullMQ user's own Queue object sees for the session's queue."""

    async def look() -> dict[str, Any]:
        queue = Queue(session, {"connection": server.url, "prefix": engine._prefix})
        try:
            jobs = await queue.getJobs(["wait"], asc=True)
            return {
                "counts": await queue.getJobCounts("wait", "active", "failed"),
                "concurrency": await queue.getGlobalConcurrency(),
                "jobs": [
                    (job.id, job.name, job.data["payload"], job.opts["attempts"]) for job in jobs
                ],
            }
        finally:
            await queue.close()

    return asyncio.run(look())


def test_messages_are_bullmq_jobs_in_a_serialised_queue_per_session(
    engine: BullmqEngine, server: RedisServer
) -> None:
    """Given two enqueues, BullMQ's own Queue sees two waiting jobs named by kind, with the
    message ids as job ids, attempts = max_attempts, and global concurrency 1."""
    first = engine.enqueue("s1", "c1", _msg("a"))
    second = engine.enqueue("s1", "c1", _msg("b"))
    seen = _bullmq_queue(engine, server, "s1")
    assert seen["concurrency"] == 1
    assert seen["counts"] == {"wait": 2, "active": 0, "failed": 0}
    assert seen["jobs"] == [
        (f"m{first.message_id}", "observation", {"key": "a"}, 5),
        (f"m{second.message_id}", "observation", {"key": "b"}, 5),
    ]


def test_a_bullmq_worker_with_a_processor_consumes_the_engines_jobs(
    engine: BullmqEngine, server: RedisServer
) -> None:
    """Given messages enqueued through obsqueue, a plain BullMQ Worker processes them in order
    and the engine sees the session empty afterwards."""
    for key in ("a", "b", "c"):
        engine.enqueue("s1", "c1", _msg(key))
    seen: list[str] = []

    async def run_worker() -> None:
        done = asyncio.Event()

        async def process(job: Any, _token: str) -> str:
            seen.append(job.data["payload"]["key"])
            if len(seen) == 3:
                done.set()
            return "ok"

        worker = Worker("s1", process, {"connection": server.url, "prefix": engine._prefix})
        try:
            await asyncio.wait_for(done.wait(), timeout=10)
        finally:
            await worker.close()

    asyncio.run(run_worker())
    assert seen == ["a", "b", "c"]
    assert engine.get_pending_count("s1") == 0
    assert engine.inspect_raw() == []


def test_a_job_added_by_someone_else_is_set_aside_not_delivered(
    engine: BullmqEngine, server: RedisServer
) -> None:
    """Given a plain BullMQ job added to a session queue ahead of obsqueue's message, a claim
    fails it into BullMQ's failed set with the reason and delivers obsqueue's message."""

    async def add_foreign() -> None:
        queue = Queue("s1", {"connection": server.url, "prefix": engine._prefix})
        try:
            await queue.add("other", {"not": "an envelope"})
        finally:
            await queue.close()

    asyncio.run(add_foreign())
    engine.enqueue("s1", "c1", _msg("ours"))
    assert _keys(engine, "s1") == ["ours"]
    failed = _bullmq_queue(engine, server, "s1")["counts"]["failed"]
    assert failed == 1
    assert engine.inspect_raw() == []


def test_bullmq_retries_a_failed_job_behind_later_ones(engine: BullmqEngine) -> None:
    """Why P1 fails: BullMQ's moveToFailed with attempts left re-queues the job at the back of
    its queue (retryJob LPUSH), so the session's next message is delivered first."""
    engine.enqueue("s1", "c1", _msg("first"))
    engine.enqueue("s1", "c1", _msg("second"))
    engine.mark_failed(_claim(engine, "s1"), "transient", retry=True)
    assert _keys(engine, "s1") == ["second", "first"]


def test_retry_backoff_waits_in_bullmqs_delayed_set(server: RedisServer) -> None:
    """Given retry_backoff_s, a failed job waits in BullMQ's delayed set for obsqueue's backoff
    strategy, then comes back with attempt 2."""
    with BullmqEngine(
        f"bullmq+{server.url}", namespace=f"t{uuid.uuid4().hex[:12]}", retry_backoff_s=0.4
    ) as engine:
        engine.enqueue("s1", "c1", _msg("a"))
        failed_at = time.monotonic()
        engine.mark_failed(_claim(engine, "s1"), "transient", retry=True)
        assert engine.claim_next("s1") is None
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert raw.zcard(f"{engine._prefix}:s1:delayed") == 1
        finally:
            raw.close()
        again = None
        while again is None and time.monotonic() - failed_at < 5:
            again = engine.claim_next("s1")
            time.sleep(0.02)
        assert again is not None and again.attempt == 2
        assert time.monotonic() - failed_at >= 0.2  # the jittered delay is 0.2-0.4 s
        engine.destroy()


def test_bullmq_dedupes_within_one_queue_only(engine: BullmqEngine) -> None:
    """Why P3 is not declared: BullMQ's deduplication id is scoped to one queue, so the same
    (content_session_id, tool_use_id) is a duplicate in its session and new in another."""
    first = engine.enqueue("s1", "c1", _msg("a", "t1"))
    assert engine.enqueue("s1", "c1", _msg("again", "t1")).message_id == first.message_id
    other = engine.enqueue("s2", "c1", _msg("b", "t1"))
    assert not other.duplicate
    assert other.message_id != first.message_id


def test_stalled_job_comes_back_first_through_bullmqs_stalled_check(
    engine: BullmqEngine, server: RedisServer
) -> None:
    """Given a claim left to expire, the next claim (after BullMQ's stalled check moved the job
    back to the front of the wait list, emitting BullMQ's 'stalled' event) has attempt 2."""
    engine.enqueue("s1", "c1", _msg("a"))
    engine.enqueue("s1", "c1", _msg("b"))
    first = _claim(engine, "s1", lease_s=0.2)
    deadline = time.monotonic() + 5
    again = None
    while again is None and time.monotonic() < deadline:
        again = engine.claim_next("s1")
        time.sleep(0.05)
    assert again is not None
    assert (again.id, again.attempt) == (first.id, 2)
    raw = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        events = raw.xrange(f"{engine._prefix}:s1:events")
    finally:
        raw.close()
    assert {"event": "stalled", "jobId": f"m{first.id}"} in [fields for _id, fields in events]


def test_reset_puts_in_flight_jobs_back_at_the_front_as_stalled(engine: BullmqEngine) -> None:
    """Given a head in flight, reset returns it to the front of its queue at once, the old
    claim is void, and BullMQ counted it as a stall."""
    engine.enqueue("s1", "c1", _msg("a"))
    engine.enqueue("s1", "c1", _msg("b"))
    held = _claim(engine, "s1")
    assert engine.reset_processing_to_pending() == 1
    assert _keys(engine, "s1") == ["a", "b"]
    assert held.attempt == 1


def test_close_ends_a_blocked_iterator_and_leaves_no_loop_behind(engine: BullmqEngine) -> None:
    """Given a consumer blocked in the iterator, close ends it with EngineClosedError, the
    private loop's thread is gone, and nothing warns (pytest turns warnings into errors)."""
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            for _ in engine.create_iterator("s1"):
                pass
        except EngineClosedError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.5)
    engine.destroy()
    engine.close()
    thread.join(timeout=5)
    gc.collect()
    assert not thread.is_alive()
    assert [type(e) for e in outcome] == [EngineClosedError]
    assert not [t for t in threading.enumerate() if t.name.startswith("obsqueue-bullmq-")]


def test_unreachable_server_is_reported_within_the_connect_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match=r"bullmq\+redis://127.0.0.1"):
        open_engine(f"bullmq+redis://127.0.0.1:{free_port()}/0", connect_timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_describe_reports_bullmq_redis_and_durability(engine: BullmqEngine) -> None:
    info = engine.describe()
    assert info["library"]["bullmq"]
    assert info["server"]["version"]
    assert info["durability"]["appendonly"] == "yes"
    assert info["durability"]["appendfsync"] == "always"
    assert info["durability"]["server_crash_durable"] is True
    assert info["glue"] == list(BullmqEngine.glue)
