"""The native Redis engine's own mechanics, on throwaway redis-server instances.

The shared conformance suite checks the properties (P1-P16, docs/properties.md), kill -9 of the
server included; these tests check only what is particular to ``redis://``: a stall on the last
attempt in Lua, the depth counter, dedupe index and sessions index every script keeps, the wake
lists (one waiter, and several many-session waiters woken by one burst), exact ids and the
script cache reloaded, lone surrogates, namespaces, a silent server, the retry policy of the
link, and describe() (persistence, CONFIG refused).
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from obsqueue.engines.base import PendingMessage
from obsqueue.engines.redis.engine import RedisEngine
from obsqueue.errors import EngineUnavailableError, InvalidMessageError
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


def _open(url: str, namespace: str, **options: Any) -> RedisEngine:
    return RedisEngine(url, namespace=namespace, retry_backoff_s=0, **options)


@pytest.fixture
def engine(server: RedisServer, namespace: str) -> Iterator[RedisEngine]:
    eng = _open(server.url, namespace, lease_s=0.3, max_attempts=3)
    yield eng
    if not eng.closed:
        eng.destroy()
        eng.close()


def obs(tool_use_id: str | None = None, **payload: Any) -> PendingMessage:
    return PendingMessage("observation", tool_use_id, payload, 1_763_800_000_123)


# -------------------------------------------------------------------- leases (P7, P8, P15)


def test_stall_on_last_attempt_kills_and_frees_the_next_head(engine: RedisEngine) -> None:
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
    nxt = engine.claim_next("s")
    assert nxt is not None and nxt.id == second_id
    # And the dead message released its dedupe key
    assert not engine.enqueue("s", "c", obs("toolu_1")).duplicate


# ------------------------------------------------------------- scripts keep their indexes


def _truth(eng: RedisEngine) -> int:
    return sum(1 for m in eng.inspect_raw() if m.status != "dead")


def test_depth_counter_and_dedupe_index_follow_every_script(
    engine: RedisEngine, server: RedisServer
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
    assert engine.get_total_queue_depth() == _truth(engine) == 3
    assert (engine.get_pending_count("a"), engine.get_pending_count("b")) == (2, 1)
    for key in ("a0", "a1", "b2"):  # dead, acked, cleared: enqueue again
        assert not engine.enqueue("a", "c", obs(key)).duplicate
    assert engine.enqueue("a", "c", obs("b0")).duplicate  # still queued (reset, pending)
    assert engine.get_total_queue_depth() == _truth(engine) == 6
    # And every stored message hash has its payload key, and no payload outlives its message
    with redis.Redis.from_url(server.url, decode_responses=True) as raw:
        hashes = {k.rsplit(":", 1)[1] for k in raw.scan_iter(engine._key("m:*"))}
        payloads = {k.rsplit(":", 1)[1] for k in raw.scan_iter(engine._key("p:*"))}
    assert hashes == payloads
    assert len(hashes) == 7  # six queued, one dead


def test_wake_list_stays_one_token_with_expiry(engine: RedisEngine, server: RedisServer) -> None:
    for i in range(50):
        engine.enqueue("s", "c", obs(i=i))
    raw = redis.Redis.from_url(server.url)
    wkey = engine._key("w:", "s")
    assert raw.llen(wkey) == 1
    assert 0 < raw.pttl(wkey) <= 60_000
    assert engine.claim_next("s") is not None
    assert engine.claim_next("s") is None  # head held: the stale token is dropped
    assert raw.exists(wkey) == 0
    raw.close()


def test_the_sessions_index_follows_every_script(engine: RedisEngine, server: RedisServer) -> None:
    """The ``sessions`` zset, the many-session iterator's list of sessions with work, is scored
    by each session's head through acks, deaths and clears, and is empty once all is done."""
    for s in ("a", "b", "a", "b", "c"):  # ids 1-5: a=1,3  b=2,4  c=5
        engine.enqueue(s, "c", obs())
    raw = redis.Redis.from_url(server.url, decode_responses=True)
    key = engine._key("sessions")
    assert raw.zrange(key, 0, -1, withscores=True) == [("a", 1), ("b", 2), ("c", 5)]
    m = engine.claim_next("a")
    assert m is not None
    engine.mark_processed(m)  # a's head is 3 now
    m = engine.claim_next("b")
    assert m is not None
    engine.mark_failed(m, "no", retry=False)  # dead: b's head is 4
    assert engine.clear_pending_for_session("c") == 1
    assert raw.zrange(key, 0, -1, withscores=True) == [("a", 3), ("b", 4)]
    assert engine._sessions_with_work() == ["a", "b"]
    m = engine.claim_next("a")
    assert m is not None
    time.sleep(0.35)  # its lease (0.3 s) runs out: a stalled head is still work
    assert engine._sessions_with_work() == ["a", "b"]
    heads = engine._claim_heads(None, "c", 10.0, 8)
    assert [(h.id, h.attempt) for h in heads] == [(3, 2), (4, 1)]
    for h in heads:
        engine.mark_processed(h)
    assert raw.exists(key) == 0
    raw.close()


def test_ids_round_trip_exactly_and_scripts_reload_after_flush(
    engine: RedisEngine, server: RedisServer
) -> None:
    session, csid = "sess é \u2028 \U0001f600", "c\x1fontent"
    big = {"blob": "☃" * (1 << 19), "nested": [{"k": [1, 2.5, None, True]}]}
    engine.enqueue(session, csid, PendingMessage("summarize", "toolu_\U0001f600", big, 2**53 - 1))
    with redis.Redis.from_url(server.url) as raw:
        raw.script_flush()  # what a server restart does to the script cache
    msg = engine.claim_next(session)
    assert msg is not None
    assert (msg.session_id, msg.content_session_id, msg.tool_use_id) == (
        session,
        csid,
        "toolu_\U0001f600",
    )
    assert (msg.payload, msg.original_timestamp, msg.kind) == (big, 2**53 - 1, "summarize")
    # The dedupe field is length-prefixed: a separator inside an id cannot make two pairs equal
    assert not engine.enqueue("s", "a\x1fb", obs("c")).duplicate
    assert not engine.enqueue("s", "a", obs("b\x1fc")).duplicate


def test_lone_surrogates_in_ids_are_refused_and_nothing_is_written(engine: RedisEngine) -> None:
    for field, args in [
        ("session_id", ("s\ud800", "c", obs())),
        ("content_session_id", ("s", "c\udfff", obs())),
        ("tool_use_id", ("s", "c", obs("t\ud800"))),
    ]:
        with pytest.raises(InvalidMessageError, match=field):
            engine.enqueue(*args)
    with pytest.raises(InvalidMessageError, match="session_id"):
        engine.get_pending_count("s\ud800")
    assert engine.inspect_raw() == []
    engine.enqueue("s", "c", obs())
    msg = engine.claim_next("s")
    assert msg is not None
    engine.mark_failed(msg, "bad \ud800 text", retry=False)
    assert engine.list_dead()[0].last_error == "bad ? text"


def test_destroy_removes_only_its_namespace(server: RedisServer, namespace: str) -> None:
    with _open(server.url, namespace) as mine, _open(server.url, namespace + "x") as other:
        for eng in (mine, other):
            eng.enqueue("s", "c", obs("k"))
            eng.claim_next("s")
        mine.destroy()
        with redis.Redis.from_url(server.url) as raw:
            assert list(raw.scan_iter(match="{" + namespace + "}:*")) == []
        assert len(other.inspect_raw()) == 1
        other.destroy()


# ---------------------------------------------------------------------------- wakeup


def test_a_waiter_on_another_connection_is_woken_by_the_wake_list(
    server: RedisServer, namespace: str
) -> None:
    """The wake list's BLPOP, not the iterator's 0.2 s re-poll, wakes a consumer blocked on
    another engine object (P9 itself is the suite's)."""
    with _open(server.url, namespace) as producer, _open(server.url, namespace) as consumer:
        latencies = wake_latencies(producer, consumer)
        producer.destroy()
    assert max(latencies) < 1.0, latencies
    assert statistics.median(latencies) < 0.05, latencies  # a 0.2 s re-poll would give ~0.1 s


class _GatedWaiter(RedisEngine):
    """A consumer whose own re-polls come only every 5 s (what wakes it sooner is a wake list),
    and whose waits begin only once ``gate`` is set: work that comes between its claim round
    and its wait must still wake it."""

    WAIT_SLICE_S = 5.0
    ANY_POLL_S = 5.0

    def __init__(self, url: str, gate: threading.Event, **options: Any) -> None:
        super().__init__(url, **options)
        self.gate, self.at_gate = gate, threading.Event()

    def _wait_for_any(self, sids: tuple[str, ...] | None, timeout_s: float, mark: object) -> None:
        self.at_gate.set()
        self.gate.wait(10)
        super()._wait_for_any(sids, timeout_s, mark)


@pytest.mark.parametrize("every", [True, False], ids=["every-session", "a-set"])
def test_consumers_waiting_on_overlapping_sessions_are_all_woken_by_a_burst(
    server: RedisServer, namespace: str, every: bool
) -> None:
    """Three many-session consumers on their own connections serve the same 20 sessions (or
    every session); a burst of one message per session comes after each claim round found
    nothing and before any of them waits. All three still wake within a second, each taking
    heads of its own: the burst leaves a wake token for each waiter, not one for all (the
    other two would sleep out their 5 s re-poll)."""
    sessions = [f"s{i}" for i in range(20)]
    stop, done, gate = threading.Event(), threading.Event(), threading.Event()
    firsts: list[tuple[float, str]] = []
    consumers = [
        _GatedWaiter(server.url, gate, namespace=namespace, socket_timeout_s=30) for _ in range(3)
    ]

    def consume(eng: RedisEngine) -> None:
        it = eng.create_multi_session_iterator(None if every else sessions, stop=stop)
        msg = next(it, None)
        if msg is not None:
            firsts.append((time.monotonic(), msg.session_id))
            eng.mark_processed(msg)
        done.wait(10)
        it.close()  # gives back the heads it holds

    threads = [threading.Thread(target=consume, args=(eng,)) for eng in consumers]
    try:
        with _open(server.url, namespace) as producer:
            for thread in threads:
                thread.start()
            assert all(eng.at_gate.wait(5) for eng in consumers)
            sent = time.monotonic()
            producer.enqueue_many([(s, "c", obs(s=s)) for s in sessions])
            gate.set()
            deadline = sent + 3
            while len(firsts) < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            woken = sorted(round(t - sent, 3) for t, _ in firsts)
            done.set()
            stop.set()
            for thread in threads:
                thread.join(10)
            assert len(firsts) == 3 and woken[-1] < 1.0, f"consumers woken after {woken} s"
            assert len({sid for _, sid in firsts}) == 3, firsts
            # every head an ended iterator held was given back: the other 17 are claimable
            assert len(producer._claim_heads(None, "check", 10.0, 100)) == 17
            producer.destroy()
    finally:
        done.set()
        stop.set()
        gate.set()
        for eng in consumers:
            eng.close()


# ------------------------------------------------------ persistence, reconnection (P14)


def test_a_server_without_persistence_is_described_as_not_crash_durable() -> None:
    """What makes ``redis://?server_durability=none`` an expected-fail of P4/P10 in the suite."""
    srv = _start("none")
    try:
        with _open(srv.url, "volatile") as eng:
            durability = eng.describe()["durability"]
        assert (durability["appendonly"], durability["server_crash_durable"]) == ("no", False)
    finally:
        srv.stop()


def test_unreachable_server_fails_within_connect_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    ports = {"silent": silent.getsockname()[1]}  # a refused port is the suite's (P14)
    try:
        for port in ports.values():
            started = time.monotonic()
            with pytest.raises(EngineUnavailableError) as info:
                RedisEngine(f"redis://:s3cret@127.0.0.1:{port}/0", connect_timeout_s=0.5)
            assert time.monotonic() - started < 1.5
            assert "s3cret" not in str(info.value)
            assert "***" in str(info.value)
    finally:
        silent.close()


def test_retry_policy_repeats_only_what_is_safe(server: RedisServer, namespace: str) -> None:
    engine = _open(server.url, namespace, connect_timeout_s=0.5)
    calls = []

    def lost_reply() -> None:
        calls.append(1)
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    with pytest.raises(EngineUnavailableError, match="outcome is unknown"):
        engine._link.call(lost_reply, repeatable=False)
    assert len(calls) == 1
    with pytest.raises(EngineUnavailableError, match="is the server running"):
        engine._link.call(lost_reply, repeatable=True)
    assert len(calls) > 3  # retried with backoff until connect_timeout_s ran out
    engine.close()


# ------------------------------------------------------------------------------ describe


def test_describe_reports_versions_and_persistence(engine: RedisEngine) -> None:
    info = engine.describe()
    assert info["library"]["redis"] == redis.__version__
    assert info["library"]["hiredis"]
    assert info["server"]["version"].count(".") == 2
    assert info["durability"] == {
        "appendonly": "yes",
        "appendfsync": "always",
        "save": "",
        "server_crash_durable": True,
    }


def test_describe_says_when_config_is_refused(server: RedisServer, namespace: str) -> None:
    # Given a user who may not run CONFIG (as on managed services that disable it)
    user = f"u{namespace}"
    with redis.Redis.from_url(server.url) as admin:
        admin.acl_setuser(
            user,
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-config"],
        )
        try:
            url = server.url.replace("redis://", f"redis://{user}:pw@")
            with _open(url, namespace) as eng:
                durability = eng.describe()["durability"]
        finally:
            admin.acl_deluser(user)
    assert durability["config"].startswith("unavailable: CONFIG GET was refused")
    assert durability["aof_enabled"] is True
    assert durability["server_crash_durable"] is None
