"""The SQLite engine's many-session claim (``engines/sqlite/heads.py``), on a fresh file each.

The conformance suite (``test_many_sessions.py``) checks what the many-session iterator
promises; these tests check how ``sqlite://`` keeps it: one claim round claims the heads of
several sessions in ONE write transaction (and an idle round takes no write lock at all), a
round kills a stalled head on its last attempt and claims the session's next head, heads are
given back in one transaction, the round's queries use the head index, and the file-wide
watcher wakes a many-session wait on another engine object's enqueue to any session.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obsqueue.engines.base import PendingMessage
from obsqueue.engines.sqlite.engine import SqliteEngine
from obsqueue.errors import StaleClaimError

pytestmark = pytest.mark.integration

NS = "t"


class TracedEngine(SqliteEngine):
    """The real engine, recording every statement its connections run."""

    def __init__(self, url: str, **options: Any) -> None:
        self.statements: list[str] = []
        super().__init__(url, **options)

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.set_trace_callback(self.statements.append)
        return conn

    def write_transactions(self) -> int:
        return sum(s.strip().upper() == "BEGIN IMMEDIATE" for s in self.statements)


def obs(n: int) -> PendingMessage:
    return PendingMessage("observation", None, {"n": n}, 1_763_800_000_123)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[TracedEngine]:
    with TracedEngine(url, namespace=NS, retry_backoff_s=0) as eng:
        yield eng


def test_one_round_claims_several_sessions_heads_in_one_transaction(engine: TracedEngine) -> None:
    for n in range(2):
        for sid in ("s0", "s1", "s2", "s3", "s4"):
            engine.enqueue(sid, "c", obs(n))
    engine.statements.clear()
    heads = engine._claim_heads(None, "c", 30.0, 8)
    assert engine.write_transactions() == 1
    # every session once, its first message, oldest head first; one new token each
    assert [(m.session_id, m.payload["n"], m.attempt) for m in heads] == [
        (sid, 0, 1) for sid in ("s0", "s1", "s2", "s3", "s4")
    ]
    tokens = [int(m.claim.token) for m in heads if m.claim is not None]
    assert len(set(tokens)) == 5

    engine.statements.clear()
    engine._unclaim_heads(heads)
    assert engine.write_transactions() == 1
    assert {(m.status, m.attempt) for m in engine.inspect_raw()} == {("pending", 0)}
    with pytest.raises(StaleClaimError):
        engine.mark_processed(heads[0])


def test_a_round_over_a_set_keeps_its_order_and_limit(engine: TracedEngine) -> None:
    for sid in ("x0", "x1", "x2", "other"):
        engine.enqueue(sid, "c", obs(0))
    engine.statements.clear()
    heads = engine._claim_heads(("x2", "x0", "x1"), "c", 30.0, 2)
    assert [m.session_id for m in heads] == ["x2", "x0"]
    assert engine.write_transactions() == 1
    assert sorted(engine._sessions_with_work()) == ["other", "x0", "x1", "x2"]


def test_an_idle_round_takes_no_write_lock(engine: TracedEngine) -> None:
    engine.enqueue("busy", "c", obs(0))
    engine.enqueue("busy", "c", obs(1))
    assert engine.claim_next("busy", lease_s=30.0) is not None  # its head is in flight
    engine.statements.clear()
    assert engine._claim_heads(None, "c", 30.0, 8) == []
    assert engine._claim_heads(("busy", "empty"), "c", 30.0, 8) == []
    assert engine.write_transactions() == 0


def test_a_stalled_last_attempt_dies_and_the_round_claims_the_next_head(url: str) -> None:
    with TracedEngine(url, namespace=NS, retry_backoff_s=0, max_attempts=1) as eng:
        eng.enqueue("a", "c", obs(1))
        eng.enqueue("a", "c", obs(2))
        eng.enqueue("b", "c", obs(3))
        assert eng.claim_next("a", lease_s=0.2) is not None
        time.sleep(0.25)
        eng.statements.clear()
        heads = eng._claim_heads(None, "c", 30.0, 8)
        assert eng.write_transactions() == 1
        assert sorted((m.session_id, m.payload["n"]) for m in heads) == [("a", 2), ("b", 3)]
        assert [(m.payload["n"], m.attempt) for m in eng.list_dead()] == [(1, 1)]


def test_the_round_s_queries_use_the_head_index(url: str, engine: TracedEngine) -> None:
    params = {"sids": '["a", "b"]', "by_age": 0, "now": 0, "limit": 8}
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        for name in ("due_heads", "sessions_with_work"):
            plan = raw.execute(f"EXPLAIN QUERY PLAN {engine._q[name]}", params).fetchall()
            assert f"{NS}_messages_v1_head" in str(plan), name


@pytest.mark.parametrize("sessions", [("a", "b", "c"), None], ids=["set", "every"])
def test_another_engine_s_enqueue_wakes_a_many_session_wait(
    url: str, sessions: tuple[str, ...] | None
) -> None:
    """The iterator's own re-read and the default poll are stretched to 5 s: only the watcher
    can make it fast."""
    with (
        SqliteEngine(url, namespace=NS) as producer,
        SqliteEngine(url, namespace=NS) as consumer,
    ):
        consumer.WAIT_SLICE_S = 5.0  # type: ignore[misc]
        consumer.ANY_POLL_S = 5.0  # type: ignore[misc]
        got: queue.Queue[tuple[int, int]] = queue.Queue()
        stop = threading.Event()

        def consume() -> None:
            for msg in consumer.create_multi_session_iterator(sessions, stop=stop):
                got.put((msg.payload["n"], time.time_ns()))
                consumer.mark_processed(msg)

        thread = threading.Thread(target=consume)
        thread.start()
        try:
            time.sleep(0.3)  # the consumer is blocked on an idle queue
            latencies = []
            for n in range(6):
                time.sleep(0.05)
                sent = time.time_ns()
                producer.enqueue("abc"[n % 3], "c", obs(n))
                number, at = got.get(timeout=3)
                assert number == n
                latencies.append((at - sent) / 1e9)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert max(latencies) < 1.0, latencies
