"""The Huey adapters' own mechanics, on a throwaway redis-server and on tmp_path SQLite files.

The shared conformance suite checks the properties (P1-P16, docs/properties.md), random
consumer kills and kill -9 of the server included; these tests check only what is particular to
``huey+redis://`` and ``huey+sqlite:///``: the tasks are real Huey tasks, one Huey queue per
session, the in-flight record written before Huey's dequeue (a SIGKILLed holder loses nothing
where Huey alone would), the residue and orphan paths, retry and clear against Huey's queue, the
dedupe record of a producer that died, calls that run once, URL errors, describe().
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from huey import RedisHuey, SqliteHuey

from obsqueue.conformance.spec import EngineSpec
from obsqueue.engines.base import PendingMessage
from obsqueue.engines.huey.engine import huey_name
from obsqueue.engines.huey.glue import take
from obsqueue.engines.huey.redis_engine import HueyRedisEngine
from obsqueue.engines.huey.sqlite_engine import HueySqliteEngine
from obsqueue.engines.tasks import record_observation
from obsqueue.errors import EngineUnavailableError, InvalidMessageError
from obsqueue.servers.redis import RedisServer, throwaway_redis
from tests.conftest import throwaway
from tests.integration.helpers import child

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CLASSES = {"redis": HueyRedisEngine, "sqlite": HueySqliteEngine}
Engine = HueyRedisEngine | HueySqliteEngine


def _start_redis() -> RedisServer:
    return throwaway(lambda: throwaway_redis(durability="durable"), "redis-server")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = _start_redis()
    yield server
    server.stop()


class Target:
    """One variant on a fresh store: opens engines (here or, by ``spec``, in a child)."""

    def __init__(self, variant: str, url: str, namespace: str) -> None:
        self.variant, self.url, self.namespace = variant, url, namespace

    def spec(self) -> EngineSpec:
        """The engine as the suite's child processes open it."""
        return EngineSpec(self.url, {"namespace": self.namespace, "retry_backoff_s": 0})

    def open(self, **options: Any) -> Engine:
        return _open(self.variant, self.url, self.namespace, **options)

    def plain_huey(self, session: str) -> Any:
        """A Huey instance as Huey's own users would make it, on the session's queue."""
        name = huey_name(self.namespace, session)
        if self.variant == "redis":
            return RedisHuey(
                name,
                results=False,
                url=self.url.removeprefix("huey+"),
                clean_name=False,
                blocking=False,
            )
        return SqliteHuey(name, results=False, filename=self.url.removeprefix("huey+sqlite:///"))


def _open(variant: str, url: str, namespace: str, **options: Any) -> Engine:
    options = {"retry_backoff_s": 0, **options}
    return CLASSES[variant](url, namespace=namespace, **options)


@pytest.fixture(params=["redis", "sqlite"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        return Target("sqlite", f"huey+sqlite:///{tmp_path / 'queue.db'}", namespace)
    server: RedisServer = request.getfixturevalue("redis_server")
    return Target("redis", "huey+" + server.url, namespace)


@pytest.fixture
def engine(target: Target) -> Iterator[Engine]:
    eng = target.open(lease_s=0.3, max_attempts=3)
    yield eng
    if not eng.closed:
        eng.destroy()
        eng.close()


def obs(tool_use_id: str | None = None, **payload: Any) -> PendingMessage:
    return PendingMessage("observation", tool_use_id, payload, 1_763_800_000_123)


def fill(eng: Engine, session: str, n: int) -> list[int]:
    return [eng.enqueue(session, "content", obs(n=i)).message_id for i in range(n)]


def huey_queue_ids(eng: Engine, session: str) -> list[int]:
    """The ids in Huey's own queue for the session, read through Huey's API."""
    huey, _ = eng._huey(session)
    return [int(t.id) for t in huey.pending()]


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# ------------------------------------------------------------------------- the tasks


def test_stored_messages_are_real_huey_tasks(target: Target, engine: Engine) -> None:
    # Given a message enqueued through the engine
    r = engine.enqueue("s1", "content", obs("toolu_1", text="héllo"))
    # When a plain Huey instance, as Huey's users make one, looks at the session's queue
    huey = target.plain_huey("s1")
    task_wrapper = huey.task()(record_observation)
    assert huey.pending_count() == 1
    task = huey.dequeue()
    # Then it finds a record_observation task whose id is the message id, and can run it
    assert type(task) is task_wrapper.task_class
    assert task.id == str(r.message_id)
    envelope = huey.execute(task)
    assert envelope["id"] == r.message_id
    assert envelope["payload_json"] == '{"text":"héllo"}'
    assert envelope["tool_use_id"] == "toolu_1"


def test_each_session_is_its_own_huey_queue_in_fifo_order(engine: Engine) -> None:
    a = [engine.enqueue("a", "content", obs(n=i)).message_id for i in range(5)]
    b = [engine.enqueue("b", "content", obs(n=i)).message_id for i in range(3)]
    assert huey_queue_ids(engine, "a") == a
    assert huey_queue_ids(engine, "b") == b
    assert a == sorted(a) and b == sorted(b) and not set(a) & set(b)
    for session, ids in (("b", b), ("a", a)):
        got = []
        for msg in engine.create_iterator(session, idle_timeout=0.3):
            got.append(msg.id)
            engine.mark_processed(msg)
        assert got == ids
    assert engine.get_total_queue_depth() == 0


# ----------------------------------------------------- the in-flight record (glue)


def test_huey_alone_loses_a_task_whose_consumer_dies_and_the_glue_keeps_it(
    target: Target, engine: Engine, tmp_path: Path
) -> None:
    # Given three messages and the suite's holder process holding the first one, mid-message
    ids = fill(engine, "s1", 3)
    with child(
        "claim_and_hold", target.spec(), tmp_path, "holder", session="s1", lease_s=0.5
    ) as holder:
        assert holder.expect("claimed")["message_id"] == ids[0]
        # When the consumer is SIGKILLed
        holder.sigkill()
    # Then Huey's queue no longer has the task (Huey's dequeue removed it: alone, it is lost),
    assert huey_queue_ids(engine, "s1") == ids[1:]
    # but the glue's record holds it, in flight, and nothing of the session is claimable
    raw = {m.id: m for m in engine.inspect_raw()}
    assert raw[ids[0]].status == "processing" and raw[ids[0]].attempt == 1
    assert engine.get_pending_count("s1") == 3
    assert engine.claim_next("s1") is None
    # And after its lease the same message is delivered again, first, with attempt 2
    time.sleep(0.6)
    again = engine.claim_next("s1")
    assert again is not None and (again.id, again.attempt) == (ids[0], 2)
    engine.mark_processed(again)
    rest = []
    for msg in engine.create_iterator("s1", idle_timeout=0.3):
        rest.append((msg.id, msg.attempt))
        engine.mark_processed(msg)
    assert rest == [(ids[1], 1), (ids[2], 1)]


def test_death_between_record_and_dequeue_leaves_a_residue_that_is_never_redelivered(
    target: Target, engine: Engine
) -> None:
    # Given a consumer that did the first half of a claim — recorded Huey's head in the slot —
    # and died before Huey's dequeue, the window in which Huey alone would lose the task
    ids = fill(engine, "s1", 3)
    with target.open(lease_s=0.5) as doomed:
        step = doomed._store.update("s1", lambda tx: tx.slot.ver)
        env = doomed._huey("s1")[0].pending(limit=1)[0].args[0]
        doomed._store.update("s1", lambda tx: take(tx, step, env, json.dumps(env), "doomed", 500))
    # Then the task is both in the record and at the head of Huey's queue, counted once
    assert huey_queue_ids(engine, "s1") == ids
    assert engine.get_pending_count("s1") == 3
    assert [m.id for m in engine.inspect_raw()] == ids
    # And after the lease it is delivered from the record, and the residue is dropped
    assert engine.claim_next("s1") is None
    time.sleep(0.6)
    delivered = []
    for msg in engine.create_iterator("s1", idle_timeout=0.3):
        delivered.append((msg.id, msg.attempt))
        engine.mark_processed(msg)
    assert delivered == [(ids[0], 2), (ids[1], 1), (ids[2], 1)]
    assert huey_queue_ids(engine, "s1") == []
    assert engine.get_total_queue_depth() == 0


def test_a_stalled_taker_that_dequeues_by_surprise_keeps_the_task_as_an_orphan(
    engine: Engine,
) -> None:
    # Given a taker that recorded the head, then stalled past its lease before its dequeue
    ids = fill(engine, "s1", 4)
    huey, _ = engine._huey("s1")
    env = huey.pending(limit=1)[0].args[0]
    ver = engine._store.update("s1", lambda tx: tx.slot.ver)
    engine._store.update("s1", lambda tx: take(tx, ver, env, json.dumps(env), "stalled", 100))
    time.sleep(0.15)
    # and another consumer that redelivered it, acked it, then removed the residue and took
    # the next message
    first = engine.claim_next("s1")
    assert first is not None and (first.id, first.attempt) == (ids[0], 2)
    engine.mark_processed(first)
    second = engine.claim_next("s1")
    assert second is not None and second.id == ids[1]
    # When the stalled taker wakes and runs its dequeue, it removes a task it did not expect
    engine._dequeue("s1", huey, expected=ids[0])
    # Then that task is kept as an orphan, delivered before Huey's queue: nothing lost
    assert huey_queue_ids(engine, "s1") == [ids[3]]
    assert engine.get_pending_count("s1") == 3
    engine.mark_processed(second)
    rest = []
    for msg in engine.create_iterator("s1", idle_timeout=0.3):
        rest.append(msg.id)
        engine.mark_processed(msg)
    assert rest == ids[2:]


def test_retry_keeps_the_place_in_the_record_not_at_hueys_tail(engine: Engine) -> None:
    ids = fill(engine, "s1", 2)
    msg = engine.claim_next("s1")
    assert msg is not None
    engine.mark_failed(msg, "transient", retry=True)
    assert huey_queue_ids(engine, "s1") == ids[1:]  # not re-enqueued to Huey
    again = engine.claim_next("s1")
    assert again is not None and (again.id, again.attempt) == (ids[0], 2)
    engine.mark_failed(again, "permanent", retry=False)
    dead = engine.list_dead("s1")
    assert [(d.id, d.attempt, d.last_error) for d in dead] == [(ids[0], 2, "permanent")]
    nxt = engine.claim_next("s1")
    assert nxt is not None and nxt.id == ids[1]


def test_clear_removes_hueys_queue_and_pending_record_but_not_the_message_in_flight(
    engine: Engine,
) -> None:
    ids = fill(engine, "s1", 4)
    held = engine.claim_next("s1")
    assert held is not None
    fill(engine, "s2", 2)
    assert engine.clear_pending_for_session("s1") == 3
    assert huey_queue_ids(engine, "s1") == [] and engine.get_pending_count("s1") == 1
    assert engine.get_pending_count("s2") == 2
    engine.mark_failed(held, "again", retry=True)  # now pending in the record: cleared too
    assert engine.clear_pending_for_session("s1") == 1
    assert [m.id for m in engine.inspect_raw() if m.session_id == "s1"] == []
    assert ids[0] not in {m.id for m in engine.inspect_raw()}


# --------------------------------------------------------------------------- dedupe


def test_dedupe_record_of_a_producer_that_died_before_enqueueing_is_replaced_after_grace(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a dedupe record whose producer died before Huey's enqueue
    monkeypatch.setattr(type(engine), "DEDUPE_GRACE_S", 0.4)
    orphaned = engine._store.prepare("s1", "content", "toolu_1", 0)
    assert orphaned.kind == "new"
    # When another enqueue of that key comes, it waits out the grace and takes the key
    started = time.monotonic()
    r = engine.enqueue("s1", "content", obs("toolu_1"))
    assert time.monotonic() - started >= 0.3
    assert r.duplicate is False and r.message_id > orphaned.id
    # Then the key dedupes against the new message
    assert engine.enqueue("s1", "content", obs("toolu_1")).message_id == r.message_id
    assert engine.get_pending_count("s1") == 1


# ----------------------------------------------------------------- wakeup, errors


def test_bundled_writes_run_once_and_reads_are_retried(redis_server: RedisServer) -> None:
    # One huey+redis call may bundle several of Huey's and the glue's writes: it runs once and
    # says its outcome is unknown. A read is retried under the shared policy, as elsewhere.
    eng = HueyRedisEngine("huey+" + redis_server.url, namespace="once", connect_timeout_s=0.5)
    calls = []

    def lost_reply() -> None:
        calls.append(1)
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    with pytest.raises(EngineUnavailableError, match="the outcome is unknown"):
        eng._call(lost_reply)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(EngineUnavailableError, match="is the server running"):
        eng._call(lost_reply, repeatable=True)
    assert len(calls) > 1
    eng.close()


def test_sqlite_in_a_missing_directory_is_unavailable_and_bad_urls_are_invalid(
    tmp_path: Path,
) -> None:
    with pytest.raises(EngineUnavailableError, match="missing"):
        HueySqliteEngine(f"huey+sqlite:///{tmp_path / 'missing' / 'q.db'}")
    for url in ("huey+sqlite://", "huey+sqlite://host/q.db", "huey+sqlite:///:memory:"):
        with pytest.raises(InvalidMessageError, match="url"):
            HueySqliteEngine(url)


def test_describe_reads_versions_and_durability_from_the_live_backend(engine: Engine) -> None:
    info = engine.describe()
    assert info["library"]["huey"]
    if isinstance(engine, HueyRedisEngine):
        assert info["server"]["version"]
        assert info["durability"]["appendfsync"] == "always"
        assert info["durability"]["server_crash_durable"] is True
    else:
        assert info["durability"] == {
            "journal_mode": "wal",
            "synchronous": 2,
            "huey_synchronous": 2,
        }
