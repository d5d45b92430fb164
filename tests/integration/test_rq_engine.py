"""The RQ adapter's own mechanics, on throwaway redis-server instances.

The shared conformance suite checks the properties (P1-P16, docs/properties.md); these tests
check only what is particular to ``rq+redis://``: that messages really are RQ jobs in RQ's queues
and registries (started, failed), that the glue scripts keep the place of a retried or reset job,
the depth counter and dedupe index, exact ids, namespaces, the wake list, a silent server and
describe(). One test documents why RQ's own concurrency limit is not used as the gate.
"""

from __future__ import annotations

import socket
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.rate_limit import RateLimit, RateLimitRegistry
from rq.serializers import JSONSerializer

from obsqueue.engines import open_engine
from obsqueue.engines.base import PendingMessage
from obsqueue.engines.rq.engine import RqEngine
from obsqueue.errors import EngineUnavailableError, StaleClaimError
from obsqueue.servers.redis import RedisServer, throwaway_redis
from tests.conftest import throwaway
from tests.integration.helpers import wake_latencies

pytestmark = pytest.mark.integration


def _start(durability: str) -> RedisServer:
    """A throwaway redis-server; skipped on a laptop without one, a failure in CI."""
    return throwaway(lambda: throwaway_redis(durability=durability), "redis-server")


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = _start("durable")
    yield srv
    srv.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _open(url: str, namespace: str, **options: Any) -> RqEngine:
    options.setdefault("retry_backoff_s", 0)
    return RqEngine(f"rq+{url}", namespace=namespace, **options)


@pytest.fixture
def engine(server: RedisServer, namespace: str) -> Iterator[RqEngine]:
    eng = _open(server.url, namespace, lease_s=0.3, max_attempts=3)
    yield eng
    if not eng.closed:
        eng.destroy()
        eng.close()


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis[bytes]]:
    """A plain client, as an RQ user (or rq info) would hold one."""
    client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    yield client
    client.close()


def obs(tool_use_id: str | None = None, **payload: Any) -> PendingMessage:
    return PendingMessage("observation", tool_use_id, payload, 1_763_800_000_123)


def rq_queue(raw: redis.Redis[bytes], namespace: str, session: str) -> Queue:
    return Queue(f"obsq:{namespace}:{session}", connection=raw, serializer=JSONSerializer)


# ------------------------------------------------------------------ messages are RQ jobs


def test_messages_are_rq_jobs_in_rq_queues_and_registries(
    engine: RqEngine, raw: redis.Redis[bytes], namespace: str
) -> None:
    # Given three messages of one session
    ids = [engine.enqueue("s", "c", obs(f"toolu_{i}", i=i)).message_id for i in range(3)]
    queue = rq_queue(raw, namespace, "s")
    # Then RQ sees them as queued jobs naming the task function, with the envelope as argument
    assert queue.get_job_ids() == [f"{namespace}-{i}" for i in ids]
    assert queue in Queue.all(connection=raw)
    job = Job.fetch(f"{namespace}-{ids[0]}", connection=raw, serializer=JSONSerializer)
    assert job.func_name == "obsqueue.engines.tasks.record_observation"
    assert job.args == [
        {
            "session_id": "s",
            "content_session_id": "c",
            "kind": "observation",
            "tool_use_id": "toolu_0",
            "payload": {"i": 0},
            "original_timestamp": 1_763_800_000_123,
        }
    ]
    assert (job.get_status(), job.origin, job.result_ttl) == (JobStatus.QUEUED, queue.name, 0)
    # When one is claimed, it leaves the queue for StartedJobRegistry under its claim's token
    msg = engine.claim_next("s")
    assert msg is not None and msg.claim is not None
    started = queue.started_job_registry
    assert started.get_job_and_execution_ids(cleanup=False) == [(job.id, str(msg.claim.token))]
    assert job.get_status() == JobStatus.STARTED
    assert queue.get_job_ids() == [f"{namespace}-{i}" for i in ids[1:]]
    # And a dead one is in FailedJobRegistry; an acked one is gone, as with result_ttl=0
    engine.mark_failed(msg, "boom", retry=False)
    assert queue.failed_job_registry.get_job_ids(cleanup=False) == [job.id]
    assert job.get_status() == JobStatus.FAILED
    nxt = engine.claim_next("s")
    assert nxt is not None
    engine.mark_processed(nxt)
    assert not Job.exists(f"{namespace}-{nxt.id}", connection=raw)
    assert started.get_job_and_execution_ids(cleanup=False) == []
    assert engine.get_pending_count("s") == 1 == queue.count


def test_a_job_pushed_with_rq_directly_is_set_aside(
    engine: RqEngine, raw: redis.Redis[bytes], namespace: str
) -> None:
    # Given a job that an RQ user enqueued into a session's queue, ahead of obsqueue's message
    queue = rq_queue(raw, namespace, "s")
    foreign = queue.enqueue("obsqueue.engines.tasks.record_observation", {"x": 1})
    mine = engine.enqueue("s", "c", obs()).message_id
    # Then the claim moves it to FailedJobRegistry, visibly, and the session goes on
    assert engine.claim_next("s") is None
    assert queue.failed_job_registry.get_job_ids(cleanup=False) == [foreign.id]
    msg = engine.claim_next("s")
    assert msg is not None and msg.id == mine
    engine.mark_processed(msg)
    # And clearing a session never counts jobs that are not obsqueue's
    other = queue.enqueue("obsqueue.engines.tasks.record_observation", {"x": 2})
    engine.enqueue("s", "c", obs())
    assert engine.clear_pending_for_session("s") == 1
    assert engine.get_total_queue_depth() == 0
    assert set(queue.failed_job_registry.get_job_ids(cleanup=False)) == {foreign.id, other.id}
    foreign.delete()
    other.delete()


def test_rq_rate_limit_would_reorder_a_session(raw: redis.Redis[bytes], namespace: str) -> None:
    # Why the gate is glue: RQ 3.0's concurrency-limited key orders waiting jobs by whole
    # seconds of the producer's clock, then by job id as text. Alarms if RQ starts keeping order.
    frac = time.time() % 1
    if frac > 0.5:
        time.sleep(1.02 - frac)  # enqueue all of them within one second
    queue = rq_queue(raw, namespace, "rl")
    limit = RateLimit(f"{namespace}-session", concurrency=1)
    sent = [
        queue.enqueue(
            "obsqueue.engines.tasks.record_observation",
            {"i": i},
            job_id=f"{namespace}-{i}",
            rate_limit=limit,
        ).id
        for i in range(8, 12)
    ]
    registry = RateLimitRegistry(limit.key, raw)
    delivered = []
    for _ in sent:
        job_id = queue.pop_job_id()
        assert job_id is not None
        delivered.append(job_id)
        Job.fetch(job_id, connection=raw).set_status(JobStatus.FINISHED)
        registry.release_and_enqueue(job_id)
    for job_id in sent:
        Job.fetch(job_id, connection=raw).delete()
    registry.cleanup()
    assert delivered == [f"{namespace}-{i}" for i in (8, 10, 11, 9)]


# -------------------------------------------------------------- leases (P6, P7, P8, P15)


def test_a_recovered_stall_is_the_new_execution_in_rqs_started_registry(
    engine: RqEngine, raw: redis.Redis[bytes], namespace: str
) -> None:
    engine.enqueue("s", "c", obs("toolu_1", n=1))
    later = engine.enqueue("s", "c", obs("toolu_2", n=2)).message_id
    first = engine.claim_next("s")
    assert first is not None and first.claim is not None
    assert engine.claim_next("s") is None  # held by its lease
    # When the consumer stalls past lease_s, the iterator of another consumer gets it again,
    # before the later message
    time.sleep(0.35)
    again = next(engine.create_iterator("s", idle_timeout=2.0))
    assert again.claim is not None
    assert (again.id, again.attempt) == (first.id, 2)
    assert again.claim.token > first.claim.token
    started = rq_queue(raw, namespace, "s").started_job_registry
    assert started.get_job_and_execution_ids(cleanup=False) == [
        (f"{namespace}-{first.id}", str(again.claim.token))
    ]
    # (that every use of the old claim is refused is P8, the suite's)
    held, waiting = engine.inspect_raw()
    assert (held.status, held.claim_token, held.last_error) == (
        "processing",
        again.claim.token,
        None,
    )
    assert (waiting.id, waiting.status) == (later, "pending")
    engine.mark_processed(again)


def test_stall_on_last_attempt_kills_and_frees_the_next_head(
    engine: RqEngine, raw: redis.Redis[bytes], namespace: str
) -> None:
    first_id = engine.enqueue("s", "c", obs("toolu_1")).message_id
    second_id = engine.enqueue("s", "c", obs("toolu_2")).message_id
    for _ in range(3):  # max_attempts=3 deliveries, each left to expire
        assert engine.claim_next("s", lease_s=0.05) is not None
        time.sleep(0.08)
    assert engine.claim_next("s") is None  # this claim finds the head stalled on its last try
    dead = engine.list_dead()
    assert [(m.id, m.attempt, m.last_error) for m in dead] == [
        (first_id, 3, "lease expired on the last attempt")
    ]
    queue = rq_queue(raw, namespace, "s")
    assert queue.failed_job_registry.get_job_ids(cleanup=False) == [f"{namespace}-{first_id}"]
    nxt = engine.claim_next("s")
    assert nxt is not None and nxt.id == second_id
    # And the dead message released its dedupe key
    assert not engine.enqueue("s", "c", obs("toolu_1")).duplicate


def test_retry_keeps_the_place_until_due(server: RedisServer, namespace: str) -> None:
    # A 0.3 s backoff, jittered to between 0.15 s and 0.3 s
    with _open(server.url, namespace, max_attempts=2, retry_backoff_s=0.3) as eng:
        first = eng.enqueue("s", "c", obs(n=1)).message_id
        eng.enqueue("s", "c", obs(n=2))
        msg = eng.claim_next("s")
        assert msg is not None
        eng.mark_failed(msg, "try again", retry=True)
        # Then the retried job is back at the front of its RQ queue, not yet due
        assert eng.claim_next("s") is None
        time.sleep(0.35)
        again = eng.claim_next("s")
        assert again is not None and (again.id, again.attempt) == (first, 2)
        eng.mark_failed(again, "out of attempts", retry=True)
        assert [(m.id, m.last_error) for m in eng.list_dead()] == [(first, "out of attempts")]
        eng.destroy()


def test_reset_voids_the_claim_and_keeps_the_place(
    engine: RqEngine, raw: redis.Redis[bytes], namespace: str
) -> None:
    ids = [engine.enqueue(s, "c", obs(i=i)).message_id for i, s in enumerate("sstu")]
    held = [engine.claim_next(s) for s in "stu"]
    assert engine.reset_processing_to_pending("other") == 0
    assert engine.reset_processing_to_pending("s") == 1
    assert rq_queue(raw, namespace, "s").get_job_ids() == [f"{namespace}-{i}" for i in ids[:2]]
    assert engine.reset_processing_to_pending() == 2  # t and u
    for msg in held:
        assert msg is not None
        with pytest.raises(StaleClaimError):
            engine.mark_processed(msg)
    again = engine.claim_next("s")
    assert again is not None and (again.id, again.attempt) == (ids[0], 2)


# ------------------------------------------------------------- glue follows every script


def test_depth_counter_and_dedupe_index_follow_every_script(
    engine: RqEngine, raw: redis.Redis[bytes], namespace: str
) -> None:
    for s in ("a", "b"):
        for i in range(4):
            engine.enqueue(s, "c", obs(f"{s}{i}"))
    assert engine.enqueue("z", "c", obs("a0")).duplicate  # dedupe spans sessions
    m = engine.claim_next("a")
    assert m is not None
    engine.mark_failed(m, "again", retry=True)  # pending again: still deduped
    assert engine.enqueue("a", "c", obs("a0")).duplicate
    m = engine.claim_next("a")
    assert m is not None
    engine.mark_failed(m, "no", retry=False)  # dead: key released, depth down
    m = engine.claim_next("a")
    assert m is not None
    engine.mark_processed(m)  # acked: key released
    assert engine.claim_next("b") is not None
    assert engine.clear_pending_for_session("b") == 3  # the one in flight stays
    assert engine.reset_processing_to_pending() == 1
    truth = [m for m in engine.inspect_raw() if m.status != "dead"]
    assert engine.get_total_queue_depth() == len(truth) == 3
    assert (engine.get_pending_count("a"), engine.get_pending_count("b")) == (2, 1)
    for key in ("a0", "a1", "b2"):  # dead, acked, cleared: enqueue again
        assert not engine.enqueue("a", "c", obs(key)).duplicate
    assert engine.enqueue("a", "c", obs("b0")).duplicate  # still queued (reset, pending)
    assert engine.get_total_queue_depth() == 6
    # And every RQ job has its glue hash and no glue outlives its job
    jobs = {k.rsplit(b"-", 1)[1] for k in raw.scan_iter(f"rq:job:{namespace}-*")}
    glue = {k.rsplit(b":", 1)[1] for k in raw.scan_iter(f"obsq-rq:{namespace}:m:*")}
    assert jobs == glue
    assert len(jobs) == 7  # six queued, one dead


def test_ids_round_trip_exactly(engine: RqEngine) -> None:
    session, csid = "sess é \u2028 \U0001f600 :*?[", "c\x1fontent"
    big = {"blob": "☃" * (1 << 19), "nested": [{"k": [1, 2.5, None, True, -0.0, 1e308]}]}
    engine.enqueue(session, csid, PendingMessage("summarize", "toolu_\U0001f600", big, 2**53 - 1))
    msg = engine.claim_next(session)
    assert msg is not None
    assert (msg.session_id, msg.content_session_id, msg.tool_use_id) == (
        session,
        csid,
        "toolu_\U0001f600",
    )
    assert (msg.payload, msg.original_timestamp, msg.kind) == (big, 2**53 - 1, "summarize")
    assert engine.inspect_raw()[0].payload == big
    # The dedupe field is length-prefixed: a separator inside an id cannot make two pairs equal
    assert not engine.enqueue("s", "a\x1fb", obs("c")).duplicate
    assert not engine.enqueue("s", "a", obs("b\x1fc")).duplicate


def test_destroy_removes_only_its_namespace(
    server: RedisServer, namespace: str, raw: redis.Redis[bytes]
) -> None:
    with _open(server.url, namespace) as mine, _open(server.url, namespace + "x") as other:
        for eng in (mine, other):
            eng.enqueue("s", "c", obs("k"))
            eng.enqueue("s", "c", obs("k2"))
            eng.claim_next("s")
        mine.claim_next("s")
        mine.destroy()
        left = [k for k in raw.scan_iter() if namespace.encode() in k]
        assert all(namespace.encode() + b"x" in k for k in left), left
        queues = raw.smembers("rq:queues")
        assert [q for q in queues if f":{namespace}:".encode() in q] == []
        assert len(other.inspect_raw()) == 2
        other.destroy()


# ---------------------------------------------------------------------------- wakeup


def test_a_waiter_on_another_connection_is_woken_by_the_wake_list(
    server: RedisServer, namespace: str
) -> None:
    """The glue's wake list, not the iterator's 0.2 s re-poll, wakes a blocked consumer."""
    with _open(server.url, namespace) as producer, _open(server.url, namespace) as consumer:
        latencies = wake_latencies(producer, consumer)
        producer.destroy()
    assert max(latencies) < 1.0, latencies
    assert statistics.median(latencies) < 0.05, latencies  # a 0.2 s re-poll would give ~0.1 s


# ---------------------------------------------------------------- a silent server (P14)


def test_unreachable_server_fails_within_connect_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    ports = {"silent": silent.getsockname()[1]}  # a refused port is the suite's (P14)
    try:
        for port in ports.values():
            started = time.monotonic()
            with pytest.raises(EngineUnavailableError) as info:
                open_engine(f"rq+redis://:s3cret@127.0.0.1:{port}/0", connect_timeout_s=0.5)
            assert time.monotonic() - started < 1.5
            assert "s3cret" not in str(info.value)
            assert "***" in str(info.value)
    finally:
        silent.close()


# ------------------------------------------------------------------------------ describe


def test_describe_reports_versions_persistence_and_glue(engine: RqEngine) -> None:
    info = engine.describe()
    assert info["library"]["rq"] == "3.0.0"
    assert info["library"]["redis"] == redis.__version__
    assert info["server"]["version"].count(".") == 2
    assert info["durability"] == {
        "appendonly": "yes",
        "appendfsync": "always",
        "save": "",
        "server_crash_durable": True,
    }
    assert info["glue"] == list(RqEngine.glue)


def test_wake_list_stays_one_token_and_idle_claims_drop_it(
    engine: RqEngine, raw: redis.Redis[bytes], namespace: str
) -> None:
    for i in range(20):
        engine.enqueue("s", "c", obs(i=i))
    wkey = f"obsq-rq:{namespace}:w:s"
    assert raw.llen(wkey) == 1
    assert 0 < raw.pttl(wkey) <= 60_000
    assert engine.claim_next("s") is not None
    assert engine.claim_next("s") is None  # head held: the stale token is dropped
    assert raw.exists(wkey) == 0
