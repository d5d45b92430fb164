"""The Dramatiq adapter's own mechanics, on throwaway redis-server instances.

The shared conformance suite checks the properties (P1-P16, docs/properties.md); these tests
check only what is particular to ``dramatiq+redis://``: that messages really are Dramatiq
messages and dead letters in Dramatiq's queues, queue names for any session id, the gate across
two brokers, retry in place, clear versus Dramatiq's flush, a SIGKILLed holder's message taken
back out of its broker's acks set, a silent server, the retry rule seeing through
ConnectionClosed, and describe(). One test measures Dramatiq's own recovery of a dead
consumer's message, to show why the adapter replaces it.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq.errors
import pytest
import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.message import Message

from obsqueue.conformance.spec import EngineSpec
from obsqueue.engines import tasks
from obsqueue.engines.base import PendingMessage
from obsqueue.engines.dramatiq.redis_engine import DramatiqEngine, queue_name
from obsqueue.errors import EngineUnavailableError
from obsqueue.servers.redis import RedisServer, throwaway_redis
from tests.conftest import throwaway
from tests.integration.helpers import child

pytestmark = pytest.mark.integration

CS = "content-1"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = throwaway(lambda: throwaway_redis(durability="durable"), "redis-server")
    yield srv
    srv.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _url(server_url: str) -> str:
    return f"dramatiq+{server_url}"


@pytest.fixture
def engine(server: RedisServer, namespace: str) -> Iterator[DramatiqEngine]:
    eng = DramatiqEngine(
        _url(server.url), namespace=namespace, lease_s=0.5, max_attempts=3, retry_backoff_s=0
    )
    yield eng
    if not eng.closed:
        eng.destroy()
        eng.close()


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    yield client
    client.close()


def _msg(key: str, tool_use_id: str | None = None) -> PendingMessage:
    return PendingMessage("observation", tool_use_id, {"key": key})


def _drain(eng: DramatiqEngine, session: str, count: int, timeout_s: float = 10.0) -> list[Any]:
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        msg = eng.claim_next(session)
        if msg is None:
            time.sleep(0.02)
            continue
        got.append(msg)
        eng.mark_processed(msg)
    return got


# ------------------------------------------------------------------ Dramatiq's own objects


def test_messages_are_dramatiq_messages_in_dramatiq_queues(
    engine: DramatiqEngine, raw: redis.Redis[bytes], namespace: str
) -> None:
    """Given an enqueue, Dramatiq's queue list and message hash hold a message that Dramatiq's
    Message.decode reads as a call of record_observation; a plain Dramatiq consumer on the
    same broker namespace fetches it."""
    result = engine.enqueue("s1", CS, _msg("a", "tu-1"))
    ns = f"obsq-dramatiq:{namespace}"
    rids = raw.lrange(f"{ns}:s_s1", 0, -1)
    assert len(rids) == 1
    message = Message.decode(raw.hget(f"{ns}:s_s1.msgs", rids[0]) or b"")
    assert (message.actor_name, message.queue_name) == ("record_observation", "s_s1")
    assert message.options["obsq_id"] == result.message_id
    assert message.options["redis_message_id"] == rids[0].decode()
    envelope = message.args[0]
    assert tasks.record_observation(envelope) == envelope
    assert (envelope["tool_use_id"], envelope["payload"]) == ("tu-1", {"key": "a"})

    plain = RedisBroker(client=raw, namespace=ns, middleware=[], maintenance_chance=0)
    fetched = next(plain.consume("s_s1", prefetch=1, timeout=100))
    assert fetched is not None and fetched.message_id == message.message_id
    plain.consume("s_s1").requeue([fetched])  # hand it back as Dramatiq's worker would


def test_dead_messages_are_dramatiq_dead_letters(
    engine: DramatiqEngine, raw: redis.Redis[bytes], namespace: str
) -> None:
    """mark_failed(retry=False) is Dramatiq's consumer.nack: the message is in the queue's
    dead-letter zset and hash, listed dead with its reason, and no longer counted."""
    engine.enqueue("s1", CS, _msg("a"))
    msg = engine.claim_next("s1")
    assert msg is not None
    engine.mark_failed(msg, "permanent", retry=False)
    ns = f"obsq-dramatiq:{namespace}"
    assert raw.zcard(f"{ns}:s_s1.XQ") == 1
    assert raw.hlen(f"{ns}:s_s1.msgs") == 0
    dead = engine.list_dead()
    assert [(m.id, m.last_error, m.attempt) for m in dead] == [(msg.id, "permanent", 1)]
    assert engine.get_total_queue_depth() == 0


@pytest.mark.parametrize("session", ["plain-1", "a.XQ", "with space", "émoji 🚀", "7" * 300])
def test_any_session_id_maps_to_its_own_valid_queue(engine: DramatiqEngine, session: str) -> None:
    """Session ids that are no valid Dramatiq queue name (dots, spaces, unicode, long) get a
    hex queue name; none collides with another session's keys."""
    name = queue_name(session)
    assert "." not in name and name[:2] in ("s_", "x_")
    engine.enqueue(session, CS, _msg("mine"))
    engine.enqueue("a", CS, _msg("other"))
    got = _drain(engine, session, 1)
    assert [m.payload["key"] for m in got] == ["mine"]
    assert engine.get_pending_count(session) == 0
    assert engine.get_pending_count("a") == 1


# ------------------------------------------------------------------------- order and gate


def test_second_broker_gets_nothing_while_the_head_is_in_flight(
    engine: DramatiqEngine, server: RedisServer, namespace: str
) -> None:
    """Two engine objects are two Dramatiq brokers (two acks sets): the gate keeps the second
    from fetching the next message, which Dramatiq's prefetch=1 alone would allow."""
    for key in ("a", "b"):
        engine.enqueue("s1", CS, _msg(key))
    with DramatiqEngine(_url(server.url), namespace=namespace) as other:
        held = engine.claim_next("s1")
        assert held is not None
        assert other.claim_next("s1") is None
        engine.mark_processed(held)
        nxt = other.claim_next("s1")
        assert nxt is not None and nxt.payload == {"key": "b"}
        other.mark_processed(nxt)


def test_retry_keeps_the_place_until_due(server: RedisServer, namespace: str) -> None:
    """A retried head goes back to the front (not behind, as consumer.requeue would put it) and
    is not delivered before its backoff; nothing behind it overtakes it."""
    with DramatiqEngine(
        _url(server.url), namespace=namespace, retry_backoff_s=0.4, retry_backoff_max_s=0.4
    ) as eng:
        for key in ("first", "second"):
            eng.enqueue("s1", CS, _msg(key))
        head = eng.claim_next("s1")
        assert head is not None
        eng.mark_failed(head, "transient", retry=True)
        assert eng.claim_next("s1") is None
        time.sleep(0.45)
        again = eng.claim_next("s1")
        assert again is not None and (again.id, again.attempt) == (head.id, 2)
        eng.mark_processed(again)
        eng.destroy()


def test_clear_removes_pending_only_and_frees_their_keys(engine: DramatiqEngine) -> None:
    """Unlike Dramatiq's flush (which drops in-flight and dead messages too), clear deletes the
    queue's pending messages only, and their dedupe keys are free again."""
    engine.enqueue("s1", CS, _msg("dead"))
    dead = engine.claim_next("s1")
    assert dead is not None
    engine.mark_failed(dead, "x", retry=False)
    engine.enqueue("s1", CS, _msg("held"))
    held = engine.claim_next("s1")
    assert held is not None
    engine.enqueue("s1", CS, _msg("p1", "tu-1"))
    engine.enqueue("s1", CS, _msg("p2"))
    assert engine.clear_pending_for_session("s1") == 2
    assert sorted(m.status for m in engine.inspect_raw()) == ["dead", "processing"]
    assert not engine.enqueue("s1", CS, _msg("p1", "tu-1")).duplicate
    engine.mark_processed(held)


# ------------------------------------------------------------------ processes and crashes


def test_consumer_sigkilled_mid_message_is_recovered_at_the_head(
    engine: DramatiqEngine,
    server: RedisServer,
    namespace: str,
    raw: redis.Redis[bytes],
    tmp_path: Path,
) -> None:
    """Given the suite's holder process SIGKILLed while holding the head (in its broker's acks
    set), the next claim after the lease takes it back out of the dead broker's acks set and
    delivers it first, attempt 2, then the rest in order (P7 itself is the suite's)."""
    for i in range(3):
        engine.enqueue("s1", CS, _msg(f"m{i}"))
    spec = EngineSpec(_url(server.url), {"namespace": namespace})
    with child("claim_and_hold", spec, tmp_path, "holder", session="s1", lease_s=1.0) as holder:
        assert holder.expect("claimed")["key"] == "m0"
        holder.sigkill()
    acks = f"obsq-dramatiq:{namespace}:__acks__.*"
    assert sum(raw.scard(k) for k in raw.scan_iter(match=acks)) == 1
    got = _drain(engine, "s1", 3, timeout_s=10)
    assert [(m.payload["key"], m.attempt) for m in got] == [("m0", 2), ("m1", 1), ("m2", 1)]
    assert sum(raw.scard(k) for k in raw.scan_iter(match=acks)) == 0


def _raw_broker(raw: redis.Redis[bytes], ns: str) -> RedisBroker:
    """Dramatiq's broker as its users make one: 500 ms heartbeats, maintenance on every command."""
    return RedisBroker(
        client=raw,
        namespace=ns,
        middleware=[],
        heartbeat_timeout=500,
        maintenance_chance=MAINTENANCE_SCALE,
    )


def test_dramatiqs_own_recovery_requeues_at_the_back_uncounted_and_unfenced(
    server: RedisServer, raw: redis.Redis[bytes], namespace: str
) -> None:
    """What Dramatiq gives by itself (heartbeat_timeout=500 ms, maintenance on every command):
    a SIGKILLed consumer's message comes back only after the heartbeat timeout, *behind* the
    messages enqueued after it, with nothing counting the extra delivery; and an ack from the
    dead consumer's broker id afterwards is a silent no-op. The adapter's glue replaces this."""
    ns = f"obsq-dramatiq-raw:{namespace}"
    broker = _raw_broker(raw, ns)
    for i in range(3):
        broker.enqueue(Message("q", "record_observation", (f"m{i}",), {}, {}))
    # A consumer that fetched m0 and then died: its broker never heartbeats again
    dead = _raw_broker(raw, ns)
    dead_consumer = dead.consume("q", prefetch=1, timeout=100)
    fetched = next(dead_consumer)
    assert fetched is not None and fetched.args[0] == "m0"
    dead_id = dead.broker_id
    consumer = broker.consume("q", prefetch=1, timeout=50)
    killed_at = time.monotonic()  # the dead consumer is never used (nor closed) again
    order, redelivered_after = [], None
    while len(order) < 3 and time.monotonic() - killed_at < 20:
        msg = next(consumer)
        if msg is None:
            continue
        order.append(msg.args[0])
        if msg.args[0] == "m0":
            redelivered_after = time.monotonic() - killed_at
            assert "retries" not in msg.options  # no attempt counted anywhere
            stale = RedisBroker(client=raw, namespace=ns, middleware=[], maintenance_chance=0)
            stale.broker_id = dead_id
            assert stale.consume("q").ack(msg) is None  # the late ack: no error, no effect
            assert raw.hexists(f"{ns}:q.msgs", msg.options["redis_message_id"])
        consumer.ack(msg)
    for key in raw.scan_iter(match=f"{ns}:*"):
        raw.delete(key)
    assert order == ["m1", "m2", "m0"]
    del dead_consumer
    assert redelivered_after is not None and redelivered_after >= 0.4


# --------------------------------------------------------------------- errors and describe


def test_unreachable_server_fails_within_connect_timeout() -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError) as info:
            DramatiqEngine(
                f"dramatiq+redis://:hunter2secret@127.0.0.1:{port}/0", connect_timeout_s=0.5
            )
        assert time.monotonic() - started < 2.0
    assert "hunter2" not in str(info.value)  # a refused port is the suite's (P14)


def test_connection_closed_is_judged_by_the_redis_error_inside(
    server: RedisServer, namespace: str
) -> None:
    # Dramatiq's broker wraps redis-py's error in ConnectionClosed; the retry rule sees through it
    engine = DramatiqEngine(_url(server.url), namespace=namespace, connect_timeout_s=0.5)
    calls = []

    def closed(inner: object) -> Callable[[], None]:
        def op() -> None:
            calls.append(1)
            raise dramatiq.errors.ConnectionClosed(inner)

        return op

    with pytest.raises(EngineUnavailableError, match="outcome is unknown"):
        engine._call(closed(redis.exceptions.ConnectionError("lost")), repeatable=False)
    assert len(calls) == 1
    with pytest.raises(EngineUnavailableError, match="is the server running"):
        engine._call(closed("gone before it was sent"), repeatable=False)
    assert len(calls) > 3  # not sent, so retried until connect_timeout_s ran out
    engine.close()


def test_amqp_is_its_own_engine() -> None:
    """dramatiq+amqp:// opens DramatiqAmqpEngine; the Redis class still refuses it clearly."""
    from obsqueue.engines import engine_class

    assert engine_class("dramatiq+amqp://").__name__ == "DramatiqAmqpEngine"
    with pytest.raises(EngineUnavailableError, match="DramatiqAmqpEngine"):
        DramatiqEngine("dramatiq+amqp://guest:guest@127.0.0.1:5672/")


def test_describe_reports_versions_persistence_and_glue(engine: DramatiqEngine) -> None:
    info = engine.describe()
    assert info["library"]["dramatiq"]
    assert info["server"]["version"]
    assert info["client"]["maintenance_chance"] == 0
    assert info["durability"] == {
        "appendonly": "yes",
        "appendfsync": "always",
        "save": "",
        "server_crash_durable": True,
    }
    assert info["glue"] == list(DramatiqEngine.glue)
