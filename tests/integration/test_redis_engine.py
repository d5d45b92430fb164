"""The native Redis engine's own mechanics, on throwaway redis-server instances.

The shared conformance suite checks the contract; these tests check what is particular to
``redis://``: the Lua scripts' atomicity across processes, leases on the server clock, the wake
list, durability across kill -9 of the server in each persistence profile, reconnection, error
translation, and describe().
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from obsqueue.engines.base import PendingMessage, PendingMessageWithId
from obsqueue.engines.redis.engine import RedisEngine
from obsqueue.engines.redis.link import load_script
from obsqueue.errors import EngineUnavailableError, InvalidMessageError, StaleClaimError
from obsqueue.servers.base import free_port
from obsqueue.servers.redis import RedisServer, throwaway_redis
from tests.conftest import throwaway

pytestmark = pytest.mark.integration

SPAWN = multiprocessing.get_context("spawn")


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


# ------------------------------------------------------------- child processes (spawned)


RACED_KEYS = 40


def _race_enqueues(url: str, ns: str, who: int, barrier: Any, out: Any) -> None:
    with _open(url, ns) as eng:
        barrier.wait()
        for k in range(RACED_KEYS):
            r = eng.enqueue(f"session-of-{who}", "content", obs(f"toolu_{k}", who=who))
            out.put((k, r.message_id, r.duplicate))


def _consume(url: str, ns: str, session: str, ready: Any, out: Any) -> None:
    with _open(url, ns, lease_s=30.0) as eng:
        ready.set()
        for msg in eng.create_iterator(session, idle_timeout=1.5):
            start = time.monotonic()
            time.sleep(0.005)
            end = time.monotonic()
            out.put((msg.id, start, end))
            eng.mark_processed(msg)


def _wait_once(url: str, ns: str, session: str, ready: Any, out: Any) -> None:
    with _open(url, ns) as eng:
        assert eng.claim_next(session) is None  # also drops any stale wake token
        ready.set()
        eng._wait_for_work(session, 5.0, eng._wakeup_mark(session))
        out.put(time.monotonic())


def _receive(url: str, ns: str, session: str, ready: Any, out: Any) -> None:
    with _open(url, ns) as eng:
        ready.set()
        for msg in eng.create_iterator(session, idle_timeout=1.0):
            out.put(time.monotonic() - msg.payload["sent"])
            eng.mark_processed(msg)


def _run_children(target: Any, argsets: list[tuple[Any, ...]]) -> list[Any]:
    procs = [SPAWN.Process(target=target, args=args, daemon=True) for args in argsets]
    for p in procs:
        p.start()
    return procs


def _join(procs: list[Any]) -> None:
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, f"child {p.pid} ended with {p.exitcode}"


# ---------------------------------------------------------------------- atomicity (P2, P3)


def test_dedupe_is_atomic_across_racing_processes(server: RedisServer, namespace: str) -> None:
    # Given three processes that enqueue the same 40 (content_session_id, tool_use_id) keys
    procs_n, keys = 3, RACED_KEYS
    barrier, out = SPAWN.Barrier(procs_n), SPAWN.Queue()
    argsets = [(server.url, namespace, who, barrier, out) for who in range(procs_n)]
    procs = _run_children(_race_enqueues, argsets)
    results = [out.get(timeout=60) for _ in range(procs_n * keys)]
    _join(procs)
    # Then each key was stored once, and every racer got that one id back
    with _open(server.url, namespace) as eng:
        for k in range(keys):
            mine = [(mid, dup) for key, mid, dup in results if key == k]
            assert sorted(dup for _, dup in mine) == [False, True, True]
            assert len({mid for mid, _ in mine}) == 1
        assert len(eng.inspect_raw()) == keys
        assert eng.get_total_queue_depth() == keys
        eng.destroy()


def test_one_message_in_flight_per_session_across_consumer_processes(
    server: RedisServer, namespace: str
) -> None:
    # Given two consumer processes blocked on the same session
    ready = [SPAWN.Event(), SPAWN.Event()]
    out = SPAWN.Queue()
    procs = _run_children(_consume, [(server.url, namespace, "s", r, out) for r in ready])
    for r in ready:
        assert r.wait(30)
    # When 30 messages arrive
    with _open(server.url, namespace) as eng:
        sent = [eng.enqueue("s", "c", obs(i=i)).message_id for i in range(30)]
        deliveries = sorted(out.get(timeout=30) for _ in sent)
        _join(procs)
        assert eng.get_total_queue_depth() == 0
        eng.destroy()
    # Then each was delivered once, in order, and no two were ever in flight together
    assert [d[0] for d in deliveries] == sent
    by_start = sorted(deliveries, key=lambda d: d[1])
    assert [d[0] for d in by_start] == sent
    for (_, _, end), (_, start, _) in itertools.pairwise(by_start):
        assert start > end


# -------------------------------------------------------------------- leases (P7, P8, P15)


def test_stalled_claim_is_recovered_and_old_token_is_fenced(engine: RedisEngine) -> None:
    engine.enqueue("s", "c", obs("toolu_1", n=1))
    first = engine.claim_next("s")
    assert first is not None
    assert engine.claim_next("s") is None  # held by its lease
    # When the consumer stalls past lease_s, the iterator of another consumer gets it again
    time.sleep(0.35)
    again = next(engine.create_iterator("s", idle_timeout=2.0))
    assert (again.id, again.attempt) == (first.id, 2)
    assert again.claim is not None and first.claim is not None
    assert again.claim.token > first.claim.token
    # Then every use of the old claim is refused and changes nothing
    for act in (engine.mark_processed, engine.extend_lease):
        with pytest.raises(StaleClaimError):
            act(first)
    with pytest.raises(StaleClaimError):
        engine.mark_failed(first, "late")
    (raw,) = engine.inspect_raw()
    assert (raw.status, raw.claim_token, raw.last_error) == ("processing", again.claim.token, None)
    engine.mark_processed(again)
    assert engine.inspect_raw() == []


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


def test_extend_lease_keeps_the_claim(engine: RedisEngine) -> None:
    engine.enqueue("s", "c", obs())
    msg = engine.claim_next("s")
    assert msg is not None and msg.claim is not None
    for _ in range(3):
        time.sleep(0.15)
        claim = engine.extend_lease(msg, 0.3)
        assert claim.token == msg.claim.token
        assert claim.lease_expires_at_ms > msg.claim.lease_expires_at_ms
    assert engine.claim_next("s") is None
    engine.mark_processed(msg)


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


def test_reset_voids_the_claim_and_keeps_the_place(engine: RedisEngine) -> None:
    ids = [engine.enqueue("s", "c", obs(i=i)).message_id for i in range(3)]
    held = engine.claim_next("s")
    assert held is not None
    assert engine.reset_processing_to_pending("other") == 0
    assert engine.reset_processing_to_pending("s") == 1
    with pytest.raises(StaleClaimError):
        engine.mark_processed(held)
    again = engine.claim_next("s")
    assert again is not None and (again.id, again.attempt) == (ids[0], 2)


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


# ---------------------------------------------------------------------------- wakeup (P9)


def test_blocked_wait_in_another_process_wakes_on_enqueue(
    server: RedisServer, namespace: str
) -> None:
    ready, out = SPAWN.Event(), SPAWN.Queue()
    procs = _run_children(_wait_once, [(server.url, namespace, "s", ready, out)])
    assert ready.wait(30)
    time.sleep(0.3)  # the child is now inside its 5 s BLPOP
    with _open(server.url, namespace) as eng:
        sent = time.monotonic()
        eng.enqueue("s", "c", obs())
        woke = out.get(timeout=10)
        _join(procs)
        eng.destroy()
    assert 0 < woke - sent < 1.0


def test_iterator_in_another_process_gets_messages_fast(
    server: RedisServer, namespace: str
) -> None:
    ready, out = SPAWN.Event(), SPAWN.Queue()
    procs = _run_children(_receive, [(server.url, namespace, "s", ready, out)])
    assert ready.wait(30)
    latencies = []
    with _open(server.url, namespace) as eng:
        for i in range(20):
            time.sleep(0.05)  # let the consumer block again
            eng.enqueue("s", "c", obs(i=i, sent=time.monotonic()))
            latencies.append(out.get(timeout=10))
        _join(procs)
        eng.destroy()
    assert max(latencies) < 1.0, latencies
    assert statistics.median(latencies) < 0.05, latencies  # a 0.2 s re-poll would give ~0.1 s


# --------------------------------------------------------------- server crash (P4, P5, P14)


def _fill_and_ack(eng: RedisEngine) -> tuple[dict[int, Any], list[int]]:
    """Enqueue 60 messages over 3 sessions, then ack the first 4 of each session."""
    payloads = {}
    for i in range(60):
        r = eng.enqueue(f"s{i % 3}", "c", obs(f"toolu_{i}", i=i, text="ünïcødé"))
        payloads[r.message_id] = {"i": i, "text": "ünïcødé"}
    acked = []
    for s in ("s0", "s1", "s2"):
        for _ in range(4):
            msg = eng.claim_next(s)
            assert msg is not None
            eng.mark_processed(msg)
            acked.append(msg.id)
    return payloads, acked


def test_kill9_with_appendfsync_always_keeps_every_returned_write(
    server: RedisServer, namespace: str
) -> None:
    eng = _open(server.url, namespace, connect_timeout_s=1.0)
    payloads, acked = _fill_and_ack(eng)
    in_flight = eng.claim_next("s0")
    assert in_flight is not None
    server.kill9()
    with pytest.raises(EngineUnavailableError, match="is the server running"):
        eng.get_total_queue_depth()
    server.start()
    with redis.Redis.from_url(server.url) as admin:  # the restart emptied the script cache
        sha = hashlib.sha1(load_script("native", "enqueue").encode()).hexdigest()
        assert admin.execute_command("SCRIPT EXISTS", sha) == [0]
    # Then the same engine object reconnects by itself, and its scripts load again
    assert eng.enqueue("s0", "c", obs("toolu_59")).duplicate
    # And every returned enqueue is there with its payload, every returned ack is gone
    raw = eng.inspect_raw()
    assert {m.id: m.payload for m in raw} == {k: v for k, v in payloads.items() if k not in acked}
    assert eng.get_total_queue_depth() == 48
    (held,) = [m for m in raw if m.status == "processing"]
    assert held.claim_token == in_flight.claim.token  # type: ignore[union-attr]
    new_id = eng.enqueue("s0", "c", obs("toolu_new")).message_id
    assert new_id > max(payloads)  # ids are never reused
    eng.mark_processed(in_flight)
    eng.destroy()
    eng.close()


def test_kill9_without_persistence_loses_the_queue() -> None:
    # Documents why the suite shows SERVER_CRASH_DURABLE as expected-fail on this profile
    srv = _start("none")
    try:
        eng = _open(srv.url, "volatile", connect_timeout_s=2.0)
        assert eng.describe()["durability"]["server_crash_durable"] is False
        payloads, _ = _fill_and_ack(eng)
        assert len(eng.inspect_raw()) == len(payloads) - 12
        srv.kill9()
        srv.start()
        assert eng.inspect_raw() == []  # every acknowledged enqueue was lost
        assert eng.get_total_queue_depth() == 0
        assert eng.enqueue("s0", "c", obs()).message_id == 1  # and ids start over
        eng.close()
    finally:
        srv.stop()


def test_unreachable_server_fails_within_connect_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    ports = {"refused": free_port(), "silent": silent.getsockname()[1]}
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


def test_iterator_consumer_thread_ends_on_close(engine: RedisEngine) -> None:
    seen: list[PendingMessageWithId] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            seen.extend(engine.create_iterator("s"))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    engine.close()
    t.join(timeout=2)
    assert not t.is_alive()
    assert seen == []
    assert [type(e).__name__ for e in errors] == ["EngineClosedError"]
