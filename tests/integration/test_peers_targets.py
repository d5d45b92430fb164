"""The ceilings and peers the harness measures beside each engine, on throwaway servers.

Each target enqueues N messages over a few sessions and C consumer processes drain them all,
each message reported ``delivered`` (before its ack) and then processed, once; a consumer given
some sessions takes only those, or the target says it cannot; a
target that claims per-session order keeps it even when every consumer may take every session.
A target that claims dedupe stores a repeated key once. Each ``describe()`` reports the
durability settings actually in force, matching the server's profile or the engine URL's.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from obsqueue.benchmarks.peers import BY_BACKEND, backend_of, targets_for
from obsqueue.benchmarks.peers.base import PeerTarget
from obsqueue.benchmarks.peers.check import drain_check
from obsqueue.benchmarks.targets import WorkloadTarget
from obsqueue.engines import open_engine
from obsqueue.servers import ServerHandle, provision
from tests.conftest import throwaway

pytestmark = pytest.mark.integration

MESSAGES, SESSIONS, CONSUMERS = 240, 6, 3


@pytest.fixture(scope="module")
def redis_server() -> Iterator[ServerHandle]:
    with throwaway(lambda: provision("redis", owned=True), "redis-server") as server:
        yield server


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[ServerHandle]:
    with throwaway(lambda: provision("postgres", owned=True), "PostgreSQL") as server:
        yield server


def _targets(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> list[WorkloadTarget]:
    if backend == "sqlite":
        return targets_for(f"sqlite:///{tmp_path / 'engine.db'}", None, None)
    server: ServerHandle = request.getfixturevalue(f"{backend}_server")
    scheme = {"redis": "redis", "postgres": "postgresql"}[backend]
    return targets_for(f"{scheme}://", server.url, None)


def _target(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> WorkloadTarget:
    backend = next(b for b, classes in BY_BACKEND.items() if name in {c.name for c in classes})
    return next(t for t in _targets(backend, request, tmp_path) if t.name == name)


CLASSES = [cls for classes in BY_BACKEND.values() for cls in classes]
ALL = [cls.name for cls in CLASSES]


@pytest.mark.parametrize("name", ALL)
def test_every_message_is_delivered_once_and_reported_before_its_ack(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Given N messages over S sessions, when C consumers drain them (each given its share of
    the sessions, as the harness gives them), then every message is delivered exactly once,
    nothing is left, each message's ``delivered`` hook ran once before its ``on_message`` in the
    same consumer, and a consumer took only its own sessions unless the target says otherwise."""
    target = _target(name, request, tmp_path)
    try:
        check = drain_check(
            target, messages=MESSAGES, sessions=SESSIONS, consumers=CONSUMERS, timeout_s=120
        )
        session = target.open()
        try:
            assert session.pending() == 0
        finally:
            session.close()
    finally:
        target.cleanup()
    assert check.missing() == set()
    assert check.duplicates() == 0
    assert check.drained_per_s > 0
    assert check.hook_faults() == {}
    assert isinstance(target, PeerTarget)
    if target.consumes_given_sessions:
        assert check.strays() == 0
    else:
        assert any("any session" in note for note in target.guarantees.notes)


FIFO = [cls.name for cls in CLASSES if cls.guarantees.per_session_fifo]


@pytest.mark.parametrize("name", FIFO)
def test_a_target_claiming_session_order_keeps_it_across_consumers(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Given a target that claims per-session FIFO, when every consumer may take any session,
    then each session's messages are still delivered in enqueue order."""
    target = _target(name, request, tmp_path)
    try:
        check = drain_check(
            target,
            messages=MESSAGES,
            sessions=SESSIONS,
            consumers=CONSUMERS,
            route_sessions=False,
            timeout_s=120,
        )
    finally:
        target.cleanup()
    assert check.missing() == set()
    assert check.out_of_order() == 0


DEDUPE = [cls.name for cls in CLASSES if cls.guarantees.dedupe]


@pytest.mark.parametrize("name", DEDUPE)
def test_a_target_claiming_dedupe_stores_a_repeated_key_once(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = _target(name, request, tmp_path)
    target.prepare()
    session = target.open()
    try:
        session.enqueue("s0", '{"i": 0}', "toolu_1")
        session.enqueue("s0", '{"i": 1}', "toolu_1")
        session.enqueue("s0", '{"i": 2}', None)
        assert session.pending() == 2
    finally:
        session.close()
        target.cleanup()


def _engine_durability(url: str) -> dict[str, object]:
    with open_engine(url, namespace=f"peers{uuid.uuid4().hex[:8]}") as engine:
        try:
            durability: dict[str, object] = engine.describe()["durability"]
        finally:
            engine.destroy()
    return durability


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_the_sqlite_targets_run_at_the_engines_durability(synchronous: str, tmp_path: Path) -> None:
    """Given an engine URL with a ``synchronous`` level, the SQLite targets run at it and
    describe it exactly as the engine does."""
    url = f"sqlite:///{tmp_path / 'engine.db'}?synchronous={synchronous}"
    expected = _engine_durability(url)
    targets = targets_for(url, None, str(tmp_path / "refs"))
    assert [t.name for t in targets] == ["raw-sqlite", "huey-sqlite"]
    for target in targets:
        target.prepare()
        assert target.address == f"{tmp_path / 'refs'}.{target.name}"
        assert target.describe()["durability"] == expected
        target.cleanup()


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_server_targets_describe_the_engines_durability(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every target on a server reports the durability settings in force exactly as the
    engine on the same server does, under the same keys."""
    server: ServerHandle = request.getfixturevalue(f"{backend}_server")
    expected = _engine_durability(server.url)
    assert expected["server_crash_durable"] is True
    for target in _targets(backend, request, tmp_path):
        described = target.describe()
        assert described["kind"] in ("ceiling", "peer")
        assert described["usage"]
        assert described["durability"] == expected


def test_backends_without_references_get_none() -> None:
    assert targets_for("memory://", None, None) == []
    assert targets_for("dramatiq+amqp://guest:guest@localhost:5672/", None, None) == []
    assert backend_of("huey+redis://h:1/0") == "redis"
    assert [t.name for t in targets_for("rq+redis://127.0.0.1:6390/0", None, None)] == [
        "raw-redis",
        "rq",
        "dramatiq",
        "huey",
        "bullmq",
    ]


@pytest.mark.parametrize("name", ALL)
def test_consume_returns_soon_after_stop(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Given a consumer blocked on an empty queue, when ``stop`` is set, then ``consume``
    returns within about a second (the contract's bound; 3 s here for a loaded machine)."""
    target = _target(name, request, tmp_path)
    target.prepare()
    session = target.open()
    stop = threading.Event()
    returned: list[float] = []

    def consume() -> None:
        session.consume(["s0"], lambda s, p: None, stop)  # the harness always passes a list
        returned.append(time.monotonic())

    consumer = threading.Thread(target=consume, daemon=True)
    try:
        consumer.start()
        time.sleep(1.5)
        assert consumer.is_alive(), "consume returned before stop was set"
        stopped = time.monotonic()
        stop.set()
        consumer.join(timeout=15)
        assert returned, "consume did not return within 15 s of stop"
        assert returned[0] - stopped < 3.0
    finally:
        stop.set()
        consumer.join(timeout=15)
        session.close()
        target.cleanup()
