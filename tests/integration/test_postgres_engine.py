"""The PostgreSQL engine's own mechanics, on one throwaway cluster shared by this module.

The shared conformance suite checks the properties (P1-P16, docs/properties.md); these tests
check only what is particular to ``postgresql://``: the digest in the dedupe index, the versioned
schema created once by engines racing, the head-first ``SKIP LOCKED`` claim, the one-in-flight
guard index, the per-session advisory lock, leases on the server's clock, the fused
ack-and-claim of the iterator, backoff in place, LISTEN/NOTIFY wakeup, terminated connections,
a silent server, driver errors, connections released on close, describe(). Each test uses its
own namespace (= schema).
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from obsqueue.engines import open_engine
from obsqueue.engines.base import EnqueueResult, PendingMessage, PendingMessageWithId
from obsqueue.engines.postgres.engine import PostgresEngine
from obsqueue.engines.postgres.schema import MESSAGES_TABLE
from obsqueue.errors import EngineUnavailableError, InvalidMessageError, StaleClaimError
from obsqueue.servers.postgres import PostgresServer, throwaway_postgres
from tests.conftest import throwaway
from tests.integration.helpers import wake_latencies

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    """One throwaway cluster for every test here (crash tests restart it)."""
    srv = throwaway(lambda: throwaway_postgres(durability="durable"), "PostgreSQL")
    yield srv
    srv.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _open(url: str, namespace: str, **options: Any) -> PostgresEngine:
    return PostgresEngine(url, namespace=namespace, retry_backoff_s=0, **options)


@pytest.fixture
def engine(pg: PostgresServer, namespace: str) -> Iterator[PostgresEngine]:
    eng = _open(pg.url, namespace, lease_s=0.3, max_attempts=3)
    yield eng
    if not eng.closed:
        eng.destroy()
        eng.close()


@pytest.fixture
def admin(pg: PostgresServer) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        yield conn


def obs(tool_use_id: str | None = None, **payload: Any) -> PendingMessage:
    return PendingMessage("observation", tool_use_id, payload, 1_763_800_000_123)


def _claim(eng: PostgresEngine, session: str, **kw: Any) -> PendingMessageWithId:
    msg = eng.claim_next(session, **kw)
    assert msg is not None
    return msg


# ------------------------------------------------------------------ ids, schema, options


def test_longest_ids_fit_the_indexes(engine: PostgresEngine) -> None:
    # 512 four-byte characters each: the dedupe index holds a digest, not the ids themselves
    session, csid, tool = ("\U0001f600" * 512, "\U0010ffff" * 512, "\U0001f601" * 512)
    first = engine.enqueue(session, csid, obs(tool))
    assert engine.enqueue("other", csid, obs(tool)) == EnqueueResult(first.message_id, True)
    assert not engine.enqueue(session, csid, obs(tool[:-1])).duplicate
    msg = _claim(engine, session)
    assert (msg.session_id, msg.content_session_id, msg.tool_use_id) == (session, csid, tool)


def test_schema_is_versioned_and_created_once_by_engines_opening_at_once(
    pg: PostgresServer, namespace: str, admin: psycopg.Connection[Any]
) -> None:
    barrier, depths = threading.Barrier(4), []

    def open_at_once() -> None:
        barrier.wait()
        with _open(pg.url, namespace) as eng:
            depths.append(eng.get_total_queue_depth())

    threads = [threading.Thread(target=open_at_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert depths == [0, 0, 0, 0]
    tables = admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
        [namespace],
    ).fetchall()
    assert tables == [(MESSAGES_TABLE,), ("obsq_schema_version",)]
    versions = admin.execute(f'SELECT version FROM "{namespace}".obsq_schema_version').fetchall()
    assert versions == [(1,)]
    with _open(pg.url, namespace) as eng:
        eng.enqueue("s", "c", obs())
        eng.destroy()
        assert admin.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [namespace]
        ).fetchone() == (0,)
        # Used again after destroy(), the engine creates its schema again
        assert eng.enqueue("s", "c", obs()).message_id == 1
        eng.destroy()


def test_reserved_namespaces_and_bad_pool_sizes_are_refused(pg: PostgresServer) -> None:
    for ns in ("public", "pg_temp", "information_schema"):
        with pytest.raises(InvalidMessageError, match="namespace"):
            PostgresEngine(pg.url, namespace=ns)
    with pytest.raises(InvalidMessageError, match="pool_max_size"):
        PostgresEngine(pg.url, pool_min_size=3, pool_max_size=2)
    with pytest.raises(InvalidMessageError, match="pool_min_size"):
        open_engine(pg.url, pool_min_size=0)


# ------------------------------------------------------------------- the SQL of claims


def test_a_locked_head_yields_nothing_not_the_next_message(
    engine: PostgresEngine, namespace: str, admin: psycopg.Connection[Any]
) -> None:
    a1 = engine.enqueue("a", "c", obs(i=1)).message_id
    a2 = engine.enqueue("a", "c", obs(i=2)).message_id
    b1 = engine.enqueue("b", "c", obs(i=1)).message_id
    # Given another claimer that has locked session a's head and not committed yet
    with admin.transaction(force_rollback=True):
        admin.execute(
            f'SELECT id FROM "{namespace}".{MESSAGES_TABLE} WHERE id = %s FOR UPDATE', [a1]
        )
        started = time.monotonic()
        assert engine.claim_next("a") is None  # SKIP LOCKED skips the head, never to a2
        b = _claim(engine, "b")  # another session is not held up
        assert engine.claim_ready_heads(10) == []  # a's head locked, b's head in flight
        assert time.monotonic() - started < 1.0
    assert b.id == b1
    heads = engine.claim_ready_heads(10)
    assert [m.id for m in heads] == [a1]
    assert engine.claim_next("a") is None  # a1 in flight: a2 waits its turn
    nxt = engine.ack_and_claim_next(heads[0])
    assert nxt is not None and nxt.id == a2


def test_the_guard_index_refuses_a_second_message_in_flight(
    engine: PostgresEngine, namespace: str, admin: psycopg.Connection[Any]
) -> None:
    engine.enqueue("s", "c", obs(i=1))
    second = engine.enqueue("s", "c", obs(i=2)).message_id
    _claim(engine, "s")
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin.execute(
            f"UPDATE \"{namespace}\".{MESSAGES_TABLE} SET status = 'processing' WHERE id = %s",
            [second],
        )


def test_enqueues_of_one_session_commit_in_id_order(
    engine: PostgresEngine, namespace: str, admin: psycopg.Connection[Any]
) -> None:
    # The per-session advisory lock: an enqueue waits while another of its session is open
    done: dict[str, int] = {}

    def enqueue(session: str) -> None:
        done[session] = engine.enqueue(session, "c", obs()).message_id

    with admin.transaction():
        admin.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s || ':' || %s, 0))",
            [f"obsq_{namespace}", "held"],
        )
        waiting = threading.Thread(target=enqueue, args=("held",))
        waiting.start()
        enqueue("free")
        waiting.join(0.3)
        assert waiting.is_alive() and "free" in done
    waiting.join(10)
    assert done["held"] > done["free"]


# ------------------------------------------------------------------------ leases (P7, P8)


def test_the_lease_runs_on_the_servers_clock_and_the_fused_ack_is_fenced(
    engine: PostgresEngine,
) -> None:
    """P7 and P8 are the suite's; here: the lease is computed by the server, and the iterator's
    fused ack-and-claim refuses a stale claim like mark_processed does."""
    engine.enqueue("s", "c", obs("toolu_1"))
    first = _claim(engine, "s")
    assert first.claim is not None
    server_lease_ms = first.claim.lease_expires_at_ms - (first.enqueued_at_ms or 0)
    assert 250 <= server_lease_ms <= 1300  # lease_s=0.3 on the server's clock
    time.sleep(0.35)
    again = _claim(engine, "s")
    with pytest.raises(StaleClaimError):
        engine.ack_and_claim_next(first)
    assert [(m.status, m.attempt) for m in engine.inspect_raw()] == [("processing", 2)]
    engine.mark_processed(again)


def test_stall_on_the_last_attempt_kills_and_frees_the_next_head(engine: PostgresEngine) -> None:
    first = engine.enqueue("s", "c", obs("toolu_1")).message_id
    second = engine.enqueue("s", "c", obs("toolu_2")).message_id
    for _ in range(3):  # max_attempts=3 deliveries, each left to expire
        _claim(engine, "s", lease_s=0.05)
        time.sleep(0.08)
    assert engine.claim_next("s") is None  # this claim finds the head stalled on its last try
    assert [(m.id, m.attempt, m.last_error) for m in engine.list_dead()] == [
        (first, 3, "lease expired on the last attempt")
    ]
    assert _claim(engine, "s").id == second


def test_retry_backoff_keeps_the_head_in_place(pg: PostgresServer, namespace: str) -> None:
    eng = PostgresEngine(pg.url, namespace=namespace, retry_backoff_s=0.4, retry_backoff_max_s=1)
    try:
        eng.enqueue("s", "c", obs(i=1))
        eng.enqueue("s", "c", obs(i=2))
        msg = _claim(eng, "s")
        eng.mark_failed(msg, "transient", retry=True)
        assert eng.claim_next("s") is None  # backing off: the second does not overtake
        (head, _) = eng.inspect_raw()
        assert (head.status, head.last_error) == ("pending", "transient")
        time.sleep(0.45)
        assert _claim(eng, "s").id == msg.id
    finally:
        eng.destroy()
        eng.close()


# ------------------------------------------------------- the iterator's fused hot path


def test_iterator_ack_claims_the_next_head_in_the_same_statement(
    engine: PostgresEngine,
) -> None:
    ids = [engine.enqueue("s", "c", obs(i=i)).message_id for i in range(4)]
    it = engine.create_iterator("s", lease_s=10.0, consumer_id="me")
    first = next(it)
    engine.mark_processed(first)
    # Then the next head is already claimed for this iterator, before it is asked for
    states = [(m.id, m.status, m.attempt) for m in engine.inspect_raw()]
    assert states == [(ids[1], "processing", 1), (ids[2], "pending", 0), (ids[3], "pending", 0)]
    second = next(it)
    assert (second.id, second.attempt) == (ids[1], 1)
    assert second.claim is not None and second.claim.consumer_id == "me"
    engine.mark_processed(second)
    it.close()  # the prefetched third is given back untouched
    assert [(m.id, m.status, m.attempt, m.claim_token) for m in engine.inspect_raw()] == [
        (ids[2], "pending", 0, None),
        (ids[3], "pending", 0, None),
    ]
    stop = threading.Event()
    it = engine.create_iterator("s", stop=stop)
    third = next(it)
    stop.set()
    engine.mark_processed(third)  # stopping: no prefetch
    assert [(m.id, m.status) for m in engine.inspect_raw()] == [(ids[3], "pending")]
    assert list(it) == []


# ---------------------------------------------------------------------------- wakeup (P9)


def test_a_waiter_on_another_connection_is_woken_by_notify(
    pg: PostgresServer, namespace: str
) -> None:
    """LISTEN/NOTIFY, not the iterator's 0.2 s re-poll, wakes a consumer blocked on another
    engine object (its own pool and listener connection)."""
    with _open(pg.url, namespace) as producer, _open(pg.url, namespace) as consumer:
        latencies = wake_latencies(producer, consumer)
        producer.destroy()
    assert max(latencies) < 1.0, latencies
    assert statistics.median(latencies) < 0.05, latencies  # a 0.2 s re-poll would give ~0.1 s


# ------------------------------------------------- connections and driver errors (P14)


TERMINATE = (
    "SELECT count(pg_terminate_backend(pid, %s)) FROM pg_stat_activity "
    "WHERE application_name LIKE 'obsqueue%%' AND pid <> pg_backend_pid()"
)


@pytest.mark.parametrize(
    "wait_ms",
    [
        pytest.param(5000, id="gone-before-the-next-call"),  # caught before the query is sent
        pytest.param(0, id="racing-the-next-call"),  # the server's error answers the query
    ],
)
def test_terminated_connections_are_replaced_on_the_next_call(
    engine: PostgresEngine, admin: psycopg.Connection[Any], wait_ms: int
) -> None:
    got: list[int] = []
    stop = threading.Event()

    def consume() -> None:
        for msg in engine.create_iterator("s", stop=stop):
            got.append(msg.id)
            engine.mark_processed(msg)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        first = engine.enqueue("s", "c", obs(i=1)).message_id
        assert _eventually(lambda: got == [first])
        killed = admin.execute(TERMINATE, [wait_ms]).fetchone()
        assert killed is not None and killed[0] >= 2  # pooled connection(s) and the listener
        # Then the next calls work without an error, and the blocked consumer is still woken
        second = engine.enqueue("s", "c", obs(i=2)).message_id
        assert _eventually(lambda: got == [first, second])
    finally:
        stop.set()
        consumer.join(timeout=5)
    assert not consumer.is_alive()


def _eventually(predicate: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_unreachable_server_fails_within_connect_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        for port in (silent.getsockname()[1],):  # a refused port is the suite's (P14)
            started = time.monotonic()
            with pytest.raises(EngineUnavailableError) as info:
                PostgresEngine(f"postgresql://u:s3cret@127.0.0.1:{port}/db", connect_timeout_s=0.5)
            assert time.monotonic() - started < 1.5
            assert "s3cret" not in str(info.value)
            assert "u:***@127.0.0.1" in str(info.value)
    finally:
        silent.close()


def test_driver_errors_name_the_redacted_url(pg: PostgresServer) -> None:
    url = pg.url.replace("postgres@", "postgres:s3cret@").rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(EngineUnavailableError, match="does not exist") as info:
        PostgresEngine(url, connect_timeout_s=1.0)
    assert "s3cret" not in str(info.value) and "postgres:***@" in str(info.value)


def test_closed_engine_refuses_use_and_releases_its_connections(
    pg: PostgresServer, namespace: str, admin: psycopg.Connection[Any]
) -> None:
    eng = _open(pg.url, namespace)
    eng.enqueue("s", "c", obs())
    assert next(eng.create_iterator("s")).id == 1  # starts the listener too
    eng.destroy()
    eng.close()
    eng.close()
    with pytest.raises(Exception, match="closed"):
        eng.get_total_queue_depth()
    assert _eventually(
        lambda: (
            admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'obsqueue%%'"
            ).fetchone()
            == (0,)
        )
    )


# ------------------------------------------------------------------------------ describe


def test_describe_reads_the_live_server(engine: PostgresEngine) -> None:
    info = engine.describe()
    assert info["library"]["psycopg"] == psycopg.__version__
    assert info["library"]["psycopg_pool"]
    assert info["server"]["version_num"] >= 110000
    assert info["durability"]["fsync"] == "on"
    assert info["durability"]["synchronous_commit"] == "on"
    assert info["durability"]["server_crash_durable"] is True
    assert PostgresEngine.server_kind == "postgres"


def test_both_url_schemes_open_the_engine(pg: PostgresServer, namespace: str) -> None:
    for scheme in ("postgresql", "postgres"):
        url = scheme + pg.url.removeprefix("postgresql")
        with open_engine(url, namespace=namespace) as eng:
            assert isinstance(eng, PostgresEngine)
            eng.enqueue("s", "c", obs())
            assert eng.get_total_queue_depth() == (1 if scheme == "postgresql" else 2)
    with open_engine(pg.url, namespace=namespace) as eng:
        eng.destroy()
