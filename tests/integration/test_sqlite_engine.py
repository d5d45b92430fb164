"""The SQLite engine's own mechanics, each test on a fresh file under ``tmp_path``.

The shared conformance suite checks the properties (P1-P16, docs/properties.md); these tests
check only what is particular to ``sqlite://``: schema creation racing, durability at
``synchronous=OFF``, the watcher (inotify and polling), AUTOINCREMENT ids and the token counter,
a stall on the last attempt, the guard and head indexes, the write lock, the connection pool and
watcher on close, namespaces in one file, option and URL parsing, error translation, describe().
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import check
from obsqueue.engines import open_engine
from obsqueue.engines.base import EnqueueResult, PendingMessage, PendingMessageWithId
from obsqueue.engines.sqlite.engine import SYNCHRONOUS_LEVELS, SqliteEngine
from obsqueue.errors import (
    EngineClosedError,
    EngineUnavailableError,
    InvalidMessageError,
    StaleClaimError,
)
from tests.integration.helpers import child

pytestmark = pytest.mark.integration

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


# ------------------------------------------------------- racing connections, SIGKILL, wakeup


def test_connections_opening_a_fresh_file_at_once_create_the_schema_once(url: str) -> None:
    """Engines opened at the same instant on a new file race to create the schema; each one
    opens and writes (dedupe races are P3, in the suite)."""
    barrier, errors, ids = threading.Barrier(6), [], []

    def open_and_enqueue(who: int) -> None:
        barrier.wait()
        try:
            with _open(url) as eng:
                ids.append(eng.enqueue(f"s{who}", "c", obs(f"toolu_{who}")).message_id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_enqueue, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert sorted(ids) == list(range(1, 7))
    with _raw(url) as raw:
        tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables.count(f"{NS}_messages_v1") == 1


def test_enqueues_survive_sigkill_of_the_producer_with_synchronous_off(
    url: str, tmp_path: Path
) -> None:
    """``synchronous=OFF`` gives up durability across power loss, not across a killed process:
    the suite's producer (P4 runs it at the default FULL), SIGKILLed mid-stream, loses nothing."""
    spec = EngineSpec(url, {"namespace": NS, "synchronous": "OFF"})
    with child(
        "produce", spec, tmp_path / "h", "producer", sessions=["s"], count=5000, key_prefix="p"
    ) as producer:
        producer.expect("ready")
        time.sleep(0.5)
        producer.sigkill()
    with _open(url) as fresh:
        result = check(tmp_path / "h", fresh)
        assert fresh.describe()["durability"]["synchronous"] == "FULL"
    assert result.messages > 0
    assert result.counts["lost"] == result.counts["unexpected"] == 0, result.to_json()


@pytest.mark.parametrize("wakeup", ["auto", "poll"])
def test_a_write_on_another_connection_wakes_a_waiter_through_the_watcher(
    url: str, wakeup: str
) -> None:
    """The watcher (inotify on Linux, else polling ``data_version``) wakes a waiter of another
    engine object on the file; the iterator's own 0.2 s re-read is stretched to 5 s so that only
    the watcher can make it fast."""
    with _open(url) as producer, _open(url, wakeup=wakeup) as consumer:
        consumer.WAIT_SLICE_S = 5.0  # type: ignore[misc]
        expected = "poll" if wakeup == "poll" or not sys.platform.startswith("linux") else "inotify"
        assert consumer.describe()["client"]["wakeup"] == expected
        got: queue.Queue[tuple[int, int]] = queue.Queue()
        stop = threading.Event()

        def consume() -> None:
            for msg in consumer.create_iterator("s", stop=stop):
                got.put((msg.payload["n"], time.time_ns()))
                consumer.mark_processed(msg)

        thread = threading.Thread(target=consume)
        thread.start()
        try:
            time.sleep(0.3)  # the consumer is blocked on an idle queue
            latencies = []
            for n in range(8):
                time.sleep(0.05)
                sent = time.time_ns()
                producer.enqueue("s", "c", obs(None, n=n))
                number, at = got.get(timeout=2)
                assert number == n
                latencies.append((at - sent) / 1e9)
        finally:
            stop.set()
            thread.join(timeout=10)
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
