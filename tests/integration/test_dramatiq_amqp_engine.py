"""The Dramatiq-on-RabbitMQ adapter's own mechanics, on a throwaway RabbitMQ node per module.

The shared conformance suite checks the properties (P1-P16, docs/properties.md); these tests
check only what is particular to ``dramatiq+amqp://``: messages are Dramatiq messages in
Dramatiq's durable queues and dead-letter queues, the single-active-consumer gate, what survives
kill -9 of the node, the oracle's side effects, a silent server, describe(), and the throwaway
node itself. Never the machine's shared RabbitMQ.
"""

from __future__ import annotations

import gc
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from dramatiq.message import Message

from obsqueue.engines import open_engine, tasks
from obsqueue.engines.base import PendingMessage
from obsqueue.engines.dramatiq.amqp_engine import DramatiqAmqpEngine, amqp_queue_name
from obsqueue.errors import EngineUnavailableError
from obsqueue.servers.base import ServerUnavailableError
from obsqueue.servers.rabbitmq import RabbitmqServer, find_script, throwaway_rabbitmq
from tests.conftest import require_binary, throwaway

pytestmark = pytest.mark.integration

CS = "content-1"


def _script() -> str | None:
    try:
        return find_script()
    except ServerUnavailableError:
        return None


@pytest.fixture(scope="module")
def server() -> Iterator[RabbitmqServer]:
    require_binary(_script(), "rabbitmq-server")
    srv = throwaway(throwaway_rabbitmq, "RabbitMQ node")
    yield srv
    srv.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _url(server: RabbitmqServer) -> str:
    return f"dramatiq+{server.url}"


@pytest.fixture
def engine(server: RabbitmqServer, namespace: str) -> Iterator[DramatiqAmqpEngine]:
    eng = DramatiqAmqpEngine(_url(server), namespace=namespace, retry_backoff_s=0)
    yield eng
    if not eng.closed:
        eng.destroy()
        eng.close()


def _msg(key: str) -> PendingMessage:
    return PendingMessage("observation", None, {"key": key})


def _drain(eng: Any, session: str, count: int, timeout_s: float = 10.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        msg = eng.claim_next(session)
        if msg is not None:
            got.append(msg)
            eng.mark_processed(msg)
    return got


def _raw_channel(server: RabbitmqServer) -> Any:
    return pika.BlockingConnection(pika.URLParameters(server.url)).channel()


# ------------------------------------------------------------------------ the node itself


def test_throwaway_node_is_our_own(server: RabbitmqServer) -> None:
    """Its own node name, ports and epmd; the pids it would kill descend from its Popen."""
    info = server.describe()
    assert info["nodename"].startswith("obsq-") and info["version"]
    assert server.port != 5672 and server.epmd_port != 4369
    assert server.process is not None and server.node_pids()[0] == server.process.pid
    with open(f"/proc/{server.process.pid}/cmdline", "rb") as f:
        assert b"beam" in f.read()


# ------------------------------------------------------------------ Dramatiq's own objects


def test_messages_are_dramatiq_messages_in_durable_queues(
    engine: DramatiqAmqpEngine, server: RabbitmqServer, namespace: str
) -> None:
    result = engine.enqueue("s1", CS, _msg("a"))
    channel = _raw_channel(server)
    queue = amqp_queue_name(namespace, "s1")
    method, props, body = channel.basic_get(queue, auto_ack=False)
    assert method is not None and props.delivery_mode == 2
    message = Message.decode(body)
    assert (message.actor_name, message.queue_name) == ("record_observation", queue)
    assert message.options["obsq_id"] == result.message_id
    assert tasks.record_observation(message.args[0])["payload"] == {"key": "a"}
    channel.connection.close()  # requeues it


def test_second_engine_gets_nothing_while_the_first_consumes(
    engine: DramatiqAmqpEngine, server: RabbitmqServer, namespace: str
) -> None:
    """x-single-active-consumer: the second engine's consumer stays inactive until the first
    engine closes; then it gets the next message, in order."""
    for key in ("a", "b"):
        engine.enqueue("s1", CS, _msg(key))
    with DramatiqAmqpEngine(_url(server), namespace=namespace) as other:
        held = engine.claim_next("s1")
        assert held is not None and held.payload == {"key": "a"}
        assert other.claim_next("s1") is None
        engine.mark_processed(held)
        engine.close()
        got = _drain(other, "s1", 1)
        assert [m.payload["key"] for m in got] == ["b"]
        other.destroy()


def test_dead_message_is_a_dramatiq_dead_letter(
    engine: DramatiqAmqpEngine, server: RabbitmqServer, namespace: str
) -> None:
    engine.enqueue("s1", CS, _msg("a"))
    msg = engine.claim_next("s1")
    assert msg is not None
    engine.mark_failed(msg, "poison", retry=False)
    channel = _raw_channel(server)
    xq = f"{amqp_queue_name(namespace, 's1')}.XQ"
    deadline = time.monotonic() + 5  # RabbitMQ dead-letters asynchronously
    while channel.queue_declare(xq, passive=True).method.message_count == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    channel.connection.close()
    assert [(m.status, m.last_error) for m in engine.list_dead()] == [("dead", "poison")]
    assert engine.get_total_queue_depth() == 0


def test_oracle_reads_without_consuming_or_reordering(engine: DramatiqAmqpEngine) -> None:
    for i in range(5):
        engine.enqueue("s1", CS, _msg(f"m{i}"))
    first = [m.payload["key"] for m in engine.inspect_raw()]
    second = [m.payload["key"] for m in engine.inspect_raw()]
    assert first == second == [f"m{i}" for i in range(5)]
    assert [m.payload["key"] for m in _drain(engine, "s1", 5)] == first


# ------------------------------------------------------------------------ crash of the node


def test_acks_and_enqueues_survive_kill9_and_restart(namespace: str) -> None:
    """Given 5 confirmed enqueues and 2 acks that returned, then a settle pause, kill -9 and
    restart of the node: exactly the other 3 come back, in order, payloads exact. (The engine
    does not declare SERVER_CRASH_DURABLE — an ack is not fsynced when it returns — so the
    suite reports P4/P5 across a server kill as unsupported; this shows what does hold.)"""
    require_binary(_script(), "rabbitmq-server")
    srv = throwaway_rabbitmq()
    try:
        eng = DramatiqAmqpEngine(_url(srv), namespace=namespace)
        for i in range(5):
            eng.enqueue("s1", CS, _msg(f"m{i}"))
        assert len(_drain(eng, "s1", 2)) == 2
        eng.close()
        time.sleep(1.0)  # acks are processed but not fsynced when mark_processed returns
        srv.kill9()
        srv.start()
        with DramatiqAmqpEngine(_url(srv), namespace=namespace) as again:
            got = _drain(again, "s1", 3)
            assert [m.payload["key"] for m in got] == ["m2", "m3", "m4"]
            assert again.claim_next("s1") is None
    finally:
        srv.stop()


# --------------------------------------------------------------------- errors and describe


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreachable_server_fails_within_connect_timeout() -> None:
    # pika leaves the sockets of a failed connection attempt to the garbage collector
    _unreachable()
    gc.collect()


def _unreachable() -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError) as info:
            open_engine(f"dramatiq+amqp://u:hunter2secret@127.0.0.1:{port}/", connect_timeout_s=0.5)
        assert time.monotonic() - started < 3.0
    assert "hunter2" not in str(info.value)  # a refused port is the suite's (P14)


def test_describe_reports_versions_durability_and_glue(engine: DramatiqAmqpEngine) -> None:
    info = engine.describe()
    assert info["library"]["dramatiq"] and info["client"]["pika"]
    assert info["server"]["version"] and info["server"]["product"] == "RabbitMQ"
    assert info["durability"]["publisher_confirms"] is True
    assert info["durability"]["server_crash_durable"] is False
    assert info["glue"] == list(DramatiqAmqpEngine.glue)
