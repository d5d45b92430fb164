"""The PostgreSQL engine's many-session mechanics, on one throwaway cluster shared by this module.

The suite (``test_many_sessions.py``) checks what any engine's many-session iterator keeps (P1,
P2, P13, P14 per session); these tests check what is particular to ``postgresql://``: a head
another claimer has locked is skipped without handing out its session's next row, a head made
dead by its last stall lets the next row be claimed in the same call, the claim statements
probe the session index only as far as they need (read from ``EXPLAIN ANALYZE``), every-session
rounds take the sessions in turn from where the last stopped, and a many-session waiter is woken
by NOTIFY from another connection, by its own sessions only, without losing a wakeup that came
between its mark and its wait.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from obsqueue.engines.base import PendingMessage, PendingMessageWithId
from obsqueue.engines.postgres.engine import PostgresEngine
from obsqueue.engines.postgres.schema import MESSAGES_TABLE
from obsqueue.servers.postgres import PostgresServer, throwaway_postgres
from tests.conftest import throwaway
from tests.integration.helpers import wake_latencies

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
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


def obs(**payload: Any) -> PendingMessage:
    return PendingMessage("observation", None, payload, 1_763_800_000_123)


def _heads(
    eng: PostgresEngine, sids: tuple[str, ...] | None, limit: int
) -> list[PendingMessageWithId]:
    return eng._claim_heads(sids, "me", 10.0, limit)


# ------------------------------------------------------------------------------ claims


def test_a_locked_head_is_skipped_and_a_dead_head_frees_the_next_in_the_same_call(
    engine: PostgresEngine, namespace: str, admin: psycopg.Connection[Any]
) -> None:
    a1, a2 = (engine.enqueue("a", "c", obs(i=i)).message_id for i in (1, 2))
    b1 = engine.enqueue("b", "c", obs(i=1)).message_id
    # Given another claimer that has locked session a's head and not committed yet
    with admin.transaction(force_rollback=True):
        admin.execute(
            f'SELECT 1 FROM "{namespace}".{MESSAGES_TABLE} WHERE id = %s FOR UPDATE', [a1]
        )
        assert [m.id for m in _heads(engine, ("a", "b"), 8)] == [b1]  # never a2
    engine.reset_processing_to_pending()
    # Given a's head stalled on its last attempt (lease 0.3 s, max_attempts 3)
    for _ in range(3):
        assert engine.claim_next("a") is not None
        time.sleep(0.35)
    # Then one call makes it dead and claims a2, the session's head now, with b's head
    assert sorted(m.id for m in _heads(engine, ("a", "b"), 8)) == [a2, b1]
    assert [m.id for m in engine.list_dead()] == [a1]


def test_every_session_rounds_take_the_sessions_in_turn(engine: PostgresEngine) -> None:
    sids = [f"s{i}" for i in range(7)]
    for sid in sids:
        engine.enqueue(sid, "c", obs())
    rounds: list[set[str]] = []
    for _ in range(3):
        heads = _heads(engine, None, 3)
        rounds.append({m.session_id for m in heads})
        engine._unclaim_heads(heads)  # all claimable again: only the turn decides
    assert rounds == [{"s0", "s1", "s2"}, {"s3", "s4", "s5"}, {"s6", "s0", "s1"}]


def test_sessions_with_work_are_those_with_a_row_pending_or_in_flight(
    engine: PostgresEngine,
) -> None:
    for sid in ("idle", "busy", "gone", "waiting"):
        engine.enqueue(sid, "c", obs())
    busy = engine.claim_next("busy")
    gone = engine.claim_next("gone")
    assert busy is not None and gone is not None
    engine.mark_failed(gone, "no", retry=False)  # only a dead row left
    assert engine._sessions_with_work() == sorted(["busy", "idle", "waiting"])


def _probes(plan: Any, index: str) -> int:
    """How many times the plan's scans of ``index`` ran (their actual loops, summed)."""
    if isinstance(plan, list):
        return sum(_probes(p, index) for p in plan)
    if not isinstance(plan, dict):
        return 0
    own = plan.get("Actual Loops", 0) if plan.get("Index Name") == index else 0
    return own + sum(_probes(v, index) for v in plan.values() if isinstance(v, (dict, list)))


@pytest.mark.parametrize("every", [False, True], ids=["of-a-set", "of-every-session"])
def test_a_claim_round_probes_about_limit_sessions_not_all_of_them(
    engine: PostgresEngine, admin: psycopg.Connection[Any], namespace: str, every: bool
) -> None:
    sids = [f"s{i:04d}" for i in range(600)]
    admin.execute(
        f'INSERT INTO "{namespace}".{MESSAGES_TABLE} '
        "(session_id, content_session_id, kind, payload, original_timestamp) "
        "SELECT sid, 'c', 'observation', '{}', 0 "
        "FROM unnest(%s::text[]) sid, generate_series(1, 5)",
        [sids],
    )
    admin.execute(f'ANALYZE "{namespace}".{MESSAGES_TABLE}')
    params: dict[str, Any] = {**engine._claim_params("me", 10.0), "limit": 8}
    name = "claim_heads_any" if every else "claim_heads_of"
    params.update({"after": sids[300]} if every else {"sids": sids[::-1]})
    with admin.transaction(force_rollback=True):
        (plan,) = admin.execute(
            b"EXPLAIN (ANALYZE, FORMAT JSON) " + engine._q[name], params
        ).fetchone() or (None,)
        claimed = admin.execute(engine._q[name], params).fetchall()
    probes = _probes(
        plan if isinstance(plan, list) else json.loads(plan), "obsq_messages_v1_session"
    )
    assert len(claimed) == 8
    assert 8 <= probes <= 20, f"{probes} probes of the session index for 8 heads of 600 sessions"


# ------------------------------------------------------------------------------ wakeup


@pytest.mark.parametrize("every", [False, True], ids=["a-set-of-100", "every-session"])
def test_a_many_session_waiter_on_another_connection_is_woken_by_notify(
    pg: PostgresServer, namespace: str, every: bool
) -> None:
    """LISTEN/NOTIFY, not the iterator's 0.2 s re-poll, wakes a many-session consumer blocked on
    another engine object (its own pool and listener connection)."""
    sids = [f"s{i}" for i in range(100)]
    with _open(pg.url, namespace) as producer, _open(pg.url, namespace) as consumer:
        latencies = wake_latencies(producer, consumer, sessions=sids, every=every)
        producer.destroy()
    assert max(latencies) < 1.0, latencies
    assert statistics.median(latencies) < 0.02, latencies  # a 50 ms re-poll: ~25 ms


def test_a_set_waiter_hears_its_own_sessions_only_and_loses_no_wakeup(
    pg: PostgresServer, namespace: str
) -> None:
    mine = ("a", "b")
    with _open(pg.url, namespace) as producer, _open(pg.url, namespace) as consumer:
        # Given a mark, then an enqueue to another session: the wait lasts its whole timeout
        mark = consumer._wakeup_mark_many(mine)
        producer.enqueue("other", "c", obs())
        started = time.monotonic()
        consumer._wait_for_any(mine, 0.5, mark)
        assert time.monotonic() - started >= 0.45
        # Given a mark, then an enqueue to one of the set heard before the wait begins
        mark = consumer._wakeup_mark_many(mine)
        producer.enqueue("b", "c", obs())
        time.sleep(0.3)  # the NOTIFY has arrived: the wait must not miss it
        started = time.monotonic()
        consumer._wait_for_any(mine, 5.0, mark)
        assert time.monotonic() - started < 0.1
        # And a waiter on every session hears any of them
        mark = consumer._wakeup_mark_many(None)
        producer.enqueue("other", "c", obs())
        started = time.monotonic()
        consumer._wait_for_any(None, 5.0, mark)
        assert time.monotonic() - started < 1.0
        producer.destroy()
