"""The SQLite engine's own mechanics, each test on a fresh file under ``tmp_path``.

The shared conformance suite checks the contract; these tests check what is particular to
``sqlite://``: dedupe, schema creation and claims racing across processes, AUTOINCREMENT ids and
the token counter, stall recovery and fencing, durability through SIGKILL at every
``synchronous`` level, the cross-process wakeup (inotify and polling), the write lock, error
translation, and describe().
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obsqueue.engines import open_engine
from obsqueue.engines.base import EnqueueResult, PendingMessage, PendingMessageWithId
from obsqueue.engines.sqlite.engine import SYNCHRONOUS_LEVELS, SqliteEngine
from obsqueue.errors import (
    EngineClosedError,
    EngineUnavailableError,
    InvalidMessageError,
    StaleClaimError,
)

pytestmark = pytest.mark.integration

SPAWN = multiprocessing.get_context("spawn")
NS = "t"


def obs(tool_use_id: str | None = None, **payload: Any) -> PendingMessage:
    return PendingMessage("observation", tool_use_id, payload, 1_763_800_000_123)


def _open(url: str, **options: Any) -> SqliteEngine:
    return SqliteEngine(url, namespace=NS, retry_backoff_s=0, **options)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[SqliteEngine]:
    eng = _open(url, lease_s=0.3, max_attempts=3)
    yield eng
    eng.close()


def _claim(eng: SqliteEngine, session: str = "s", **kw: Any) -> PendingMessageWithId:
    msg = eng.claim_next(session, **kw)
    assert msg is not None
    return msg


@contextlib.contextmanager
def _raw(url: str) -> Iterator[sqlite3.Connection]:
    """A plain connection to the engine's file, bypassing the engine."""
    with contextlib.closing(
        sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    ) as conn:
        yield conn


# ------------------------------------------------------------- child processes (spawned)

RACED_KEYS = 30


def _open_then_race(url: str, who: int, barrier: Any, out: Any) -> None:
    barrier.wait()  # every child opens the fresh file at once: schema creation races too
    with _open(url) as eng:
        barrier.wait()
        for k in range(RACED_KEYS):
            r = eng.enqueue(f"session-of-{who}", "content", obs(f"toolu_{k}", who=who))
            out.put((k, r.message_id, r.duplicate))


def _consume_logging_holds(url: str, count: int, barrier: Any, out: Any) -> None:
    with _open(url, lease_s=30.0) as eng:
        barrier.wait()
        for msg in eng.create_iterator("s", idle_timeout=1.0):
            held_from = time.time_ns()
            time.sleep(0.003)  # widen the window in which a second holder would show
            out.put((msg.payload["n"], held_from, time.time_ns()))
            eng.mark_processed(msg)


def _enqueue_then_sigkill(url: str, synchronous: str) -> None:
    eng = _open(url, synchronous=synchronous)
    for n in range(3):
        eng.enqueue("s", "c", obs(f"toolu_{n}", n=n, text="durable ✓"))
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit, no flush


def _wake_on_delivery(url: str, wakeup: str, ready: Any, out: Any) -> None:
    SqliteEngine.WAIT_SLICE_S = 5.0  # without a working watcher, a wakeup would take ~5 s
    with _open(url, wakeup=wakeup) as eng:
        out.put(eng.describe()["client"]["wakeup"])
        ready.set()
        for msg in eng.create_iterator("s", idle_timeout=8.0):
            out.put((msg.payload["n"], time.time_ns()))
            eng.mark_processed(msg)


def _start(target: Any, *args: Any) -> Any:
    proc = SPAWN.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def _join(procs: list[Any], exitcode: int = 0) -> None:
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == exitcode, f"child {p.pid} ended with {p.exitcode}"


# ------------------------------------------------------------------------ across processes


def test_processes_racing_one_dedupe_key_leave_exactly_one_winner(url: str) -> None:
    procs, barrier, out = 4, SPAWN.Barrier(4), SPAWN.Queue()
    children = [_start(_open_then_race, url, who, barrier, out) for who in range(procs)]
    _join(children)
    results = [out.get(timeout=5) for _ in range(procs * RACED_KEYS)]
    for k in range(RACED_KEYS):
        outcomes = [(mid, dup) for key, mid, dup in results if key == k]
        assert [dup for _, dup in outcomes].count(False) == 1, outcomes
        assert len({mid for mid, _ in outcomes}) == 1, outcomes
    with _open(url) as eng:
        stored = eng.inspect_raw()
    assert sorted(m.tool_use_id or "" for m in stored) == sorted(
        f"toolu_{k}" for k in range(RACED_KEYS)
    )


def test_two_consumer_processes_never_hold_one_session_at_once(url: str) -> None:
    count = 40
    with _open(url) as eng:
        for n in range(count):
            eng.enqueue("s", "c", obs(None, n=n))
    barrier, out = SPAWN.Barrier(2), SPAWN.Queue()
    children = [_start(_consume_logging_holds, url, count, barrier, out) for _ in range(2)]
    _join(children)
    holds = sorted(out.get(timeout=5) for _ in range(count))
    assert [n for n, _, _ in holds] == list(range(count))
    by_start = sorted(holds, key=lambda h: h[1])
    assert [n for n, _, _ in by_start] == list(range(count)), "delivered out of order"
    for (_, _, end), (n, start, _) in itertools.pairwise(by_start):
        assert start >= end, f"message {n} was held while its predecessor was"


@pytest.mark.parametrize("synchronous", ["FULL", "OFF"])
def test_enqueues_survive_sigkill_of_the_producer_at_every_level(
    url: str, synchronous: str
) -> None:
    _open(url).close()  # the schema exists before the child
    child = _start(_enqueue_then_sigkill, url, synchronous)
    _join([child], exitcode=-signal.SIGKILL)
    with _open(url) as fresh:
        stored = fresh.inspect_raw()
    assert [(m.payload, m.status, m.original_timestamp) for m in stored] == [
        ({"n": n, "text": "durable ✓"}, "pending", 1_763_800_000_123) for n in range(3)
    ]


@pytest.mark.parametrize("wakeup", ["auto", "poll"])
def test_consumer_in_another_process_wakes_well_within_a_second(url: str, wakeup: str) -> None:
    ready, out = SPAWN.Event(), SPAWN.Queue()
    with _open(url) as producer:
        child = _start(_wake_on_delivery, url, wakeup, ready, out)
        mode = out.get(timeout=20)
        assert ready.wait(timeout=20)
        if wakeup == "poll" or not sys.platform.startswith("linux"):
            assert mode == "poll"
        else:
            assert mode == "inotify"
        time.sleep(0.3)  # the consumer is blocked on an idle queue
        latencies = []
        for n in range(8):
            time.sleep(0.05)
            sent = time.time_ns()
            producer.enqueue("s", "c", obs(None, n=n))
            try:
                got, at = out.get(timeout=2)
            except queue.Empty:
                pytest.fail(f"message {n} not delivered within 2 s")
            assert got == n
            latencies.append((at - sent) / 1e9)
    child.kill()
    child.join(timeout=5)
    assert max(latencies) < 1.0, latencies


# ----------------------------------------------------------- ids, tokens, stalls, fencing


def test_ids_are_never_reused_after_the_highest_row_is_deleted(engine: SqliteEngine) -> None:
    first = engine.enqueue("s", "c", obs()).message_id
    engine.mark_processed(_claim(engine))
    assert engine.enqueue("s", "c", obs()).message_id > first
    assert engine.clear_pending_for_session("s") == 1
    assert engine.enqueue("s", "c", obs()).message_id == first + 2


def test_tokens_grow_across_engines_and_survive_reset(url: str) -> None:
    a, b = _open(url), _open(url)
    try:
        a.enqueue("s", "c", obs())
        tokens = []
        for eng in (a, b, a, b):
            msg = _claim(eng)
            assert msg.claim is not None
            tokens.append(msg.claim.token)
            assert eng.reset_processing_to_pending("s") == 1
            with pytest.raises(StaleClaimError):
                eng.mark_processed(msg)  # the same row, claimed again later: its old token fails
        assert tokens == sorted(set(tokens)), tokens
    finally:
        a.close()
        b.close()


def test_stalled_claim_is_recovered_and_old_token_is_fenced(engine: SqliteEngine) -> None:
    engine.enqueue("s", "c", obs("toolu_1"))
    engine.enqueue("s", "c", obs("toolu_2"))
    first = _claim(engine)
    assert engine.claim_next("s") is None  # in flight: not the second message
    time.sleep(0.35)
    again = _claim(engine)
    assert (again.id, again.attempt) == (first.id, 2)
    assert again.claim is not None and first.claim is not None
    assert again.claim.token > first.claim.token
    for stale_call in (
        lambda: engine.mark_processed(first),
        lambda: engine.mark_failed(first, "late", retry=True),
        lambda: engine.extend_lease(first),
    ):
        with pytest.raises(StaleClaimError):
            stale_call()
    [row, _] = engine.inspect_raw()
    assert (row.status, row.attempt, row.claim_token) == ("processing", 2, again.claim.token)
    engine.mark_processed(again)
    assert _claim(engine).tool_use_id == "toolu_2"


def test_stall_on_the_last_attempt_kills_and_frees_the_next_head(url: str) -> None:
    with _open(url, lease_s=0.2, max_attempts=1) as eng:
        eng.enqueue("s", "c", obs("toolu_1"))
        eng.enqueue("s", "c", obs("toolu_2"))
        _claim(eng)
        time.sleep(0.25)
        assert eng.claim_next("s") is None  # the stalled head dies; the next one is now head
        assert [(m.tool_use_id, m.attempt) for m in eng.list_dead()] == [("toolu_1", 1)]
        assert _claim(eng).tool_use_id == "toolu_2"
        assert not eng.enqueue("s", "c", obs("toolu_1")).duplicate  # dead rows hold no key


def test_the_guard_index_refuses_a_second_message_in_flight(url: str, engine: SqliteEngine) -> None:
    engine.enqueue("s", "c", obs())
    engine.enqueue("s", "c", obs())
    with _raw(url) as raw, pytest.raises(sqlite3.IntegrityError):
        raw.execute(f"UPDATE {NS}_messages_v1 SET status = 'processing'")


def test_head_lookups_use_the_partial_index(url: str, engine: SqliteEngine) -> None:
    with _raw(url) as raw:
        for name in ("head", "pending_count", "clear_pending"):
            plan = raw.execute(f"EXPLAIN QUERY PLAN {engine._q[name]}", {"session_id": "s"})
            assert f"{NS}_messages_v1_head" in str(plan.fetchall()), name


# ------------------------------------------------------------------ locks and threads


def test_idle_claims_do_not_wait_for_the_write_lock(url: str) -> None:
    with _open(url, busy_timeout_s=3.0) as eng, _raw(url) as holder:
        eng.enqueue("busy", "c", obs())
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        assert eng.claim_next("empty") is None
        assert eng.get_total_queue_depth() == 1  # readers are not blocked by the writer
        assert time.monotonic() - started < 1.0
        holder.execute("ROLLBACK")


def test_a_write_lock_held_past_busy_timeout_is_unavailable_and_writes_nothing(url: str) -> None:
    with _open(url, busy_timeout_s=0.15) as eng, _raw(url) as holder:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError, match="busy_timeout_s"):
            eng.enqueue("s", "c", obs("toolu_1"))
        assert time.monotonic() - started < 1.5
        holder.execute("ROLLBACK")
        assert eng.get_total_queue_depth() == 0
        assert eng.enqueue("s", "c", obs("toolu_1")) == EnqueueResult(1, False)


def test_threads_share_one_engine(engine: SqliteEngine) -> None:
    ids: list[int] = []

    def produce(t: int) -> None:
        for n in range(25):
            ids.append(engine.enqueue(f"s{t}", "c", obs(f"toolu_{t}_{n}")).message_id)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(1, 101))
    assert engine.get_total_queue_depth() == 100


def test_close_stops_the_watcher_and_refuses_use(url: str) -> None:
    eng = _open(url)
    stop = threading.Event()
    consumer = threading.Thread(target=lambda: list(eng.create_iterator("s", stop=stop)))
    consumer.start()
    time.sleep(0.3)
    watcher = eng._watcher._thread
    assert watcher is not None and watcher.is_alive()
    stop.set()
    consumer.join(timeout=2)
    eng.close()
    assert not watcher.is_alive()
    assert not eng._idle  # pooled connections were closed
    eng.close()
    with pytest.raises(EngineClosedError):
        eng.enqueue("s", "c", obs())


# ------------------------------------------------------------- schema, namespaces, destroy


def test_namespaces_share_a_file_and_destroy_drops_only_their_own(url: str) -> None:
    with _open(url) as a, SqliteEngine(url, namespace="other") as b:
        a.enqueue("s", "c", obs("toolu_1"))
        assert b.enqueue("s", "c", obs("toolu_1")) == EnqueueResult(1, False)
        a.destroy()
        with _raw(url) as raw:
            names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
        assert not [n for n in names if n.startswith(f"{NS}_")]
        assert "other_messages_v1" in names
        assert b.get_total_queue_depth() == 1
        assert a.get_total_queue_depth() == 0  # used again after destroy(): created anew
        assert not a.enqueue("s", "c", obs("toolu_1")).duplicate


# ---------------------------------------------------------- options, errors and describe


@pytest.mark.parametrize("level", SYNCHRONOUS_LEVELS)
def test_describe_reads_the_durability_in_force(url: str, level: str) -> None:
    with _open(url, synchronous=level.lower()) as eng:
        described = eng.describe()
        with contextlib.closing(eng._connect()) as other:  # every pooled connection is set up alike
            assert other.execute("PRAGMA synchronous").fetchone()[0] == SYNCHRONOUS_LEVELS.index(
                level
            )
    assert described["durability"]["synchronous"] == level
    assert described["durability"]["journal_mode"] == "wal"
    assert described["library"]["sqlite"] == sqlite3.sqlite_version
    assert described["server"] is None


def test_url_parameters_set_options(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}?synchronous=NORMAL&busy_timeout_s=1.234&wakeup=poll"
    with open_engine(url, namespace=NS) as eng:
        described = eng.describe()
    assert described["durability"]["synchronous"] == "NORMAL"
    assert described["client"]["busy_timeout_s"] == 1.234
    assert described["client"]["wakeup"] == "poll"
    with pytest.raises(InvalidMessageError, match="synchronous"):
        open_engine(url, synchronous="OFF")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"synchronous": "SOMETIMES"}, "synchronous"),
        ({"synchronous": 2}, "synchronous"),
        ({"busy_timeout_s": 0}, "busy_timeout_s"),
        ({"busy_timeout_s": True}, "busy_timeout_s"),
        ({"poll_interval_s": 5}, "poll_interval_s"),
        ({"wakeup": "telepathy"}, "wakeup"),
    ],
)
def test_bad_options_are_refused(url: str, options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        _open(url, **options)
    assert info.value.field == field


@pytest.mark.parametrize(
    "bad_url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite://host/q.db",
        "sqlite:///q.db?cache=shared",
    ],
)
def test_urls_that_name_no_file_are_invalid(bad_url: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        SqliteEngine(bad_url)
    assert info.value.field == "url"


def test_a_missing_directory_is_unavailable_naming_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nowhere' / 'q.db'}"
    with pytest.raises(EngineUnavailableError, match="does not exist") as info:
        SqliteEngine(url)
    assert url in str(info.value)
    assert not (tmp_path / "nowhere").exists()


def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the pages you are looking for\n" * 200)
    with pytest.raises(EngineUnavailableError, match="not a SQLite database") as info:
        SqliteEngine(f"sqlite:///{path}")
    assert str(path) in str(info.value)


def test_a_directory_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="sqlite:///"):
        SqliteEngine(f"sqlite:///{tmp_path}")


def test_relative_urls_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_engine("sqlite:///rel.db") as eng:
        eng.enqueue("s", "c", obs())
    assert (tmp_path / "rel.db").is_file()
