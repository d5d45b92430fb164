"""The history checker: hand-built histories for every class and anomaly, then properties over
histories simulated from a correct FIFO queue (always valid) and mutations of them (caught)."""

from __future__ import annotations

import itertools
import json
import tempfile
from collections import defaultdict
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from obsqueue.conformance.checker import COUNTS, FAILING, CheckResult, check_history, main
from obsqueue.conformance.history import (
    HistoryWriter,
    Op,
    complete_history,
    load_history,
    save_history,
)

MS = 1_000_000
BASE_MS = 1_763_800_000_000  # histories start at a realistic wall-clock time


class H:
    """Builds a history by hand; times are milliseconds after ``BASE_MS``."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.final: list[dict[str, Any]] = []
        self._seq: dict[str, int] = defaultdict(int)
        self._ids = itertools.count(1)

    def _op(
        self, p: str, f: str, phase: str, t: float, value: dict[str, Any], op_id: int | None = None
    ) -> int:
        seq = self._seq[p]
        self._seq[p] += 1
        self.ops.append(
            Op.from_json(
                {
                    "process": p,
                    "seq": seq,
                    "f": f,
                    "phase": phase,
                    "time_ns": int((BASE_MS + t) * MS),
                    "value": value,
                    "op_id": seq if op_id is None else op_id,
                }
            )
        )
        return seq

    def call(
        self,
        p: str,
        f: str,
        t0: float,
        t1: float,
        value: dict[str, Any],
        result: dict[str, Any] | None = None,
        outcome: str = "ok",
    ) -> None:
        """``outcome="none"``: the process died inside the call (no completion logged)."""
        op = self._op(p, f, "invoke", t0, value)
        if outcome != "none":
            self._op(p, f, outcome, t1, result or {}, op)

    def enqueue(
        self,
        key: str,
        t0: float,
        t1: float | None = None,
        *,
        session: str = "s1",
        outcome: str = "ok",
        duplicate: bool = False,
        p: str = "producer",
    ) -> None:
        value = {"session": session, "key": key, "tool_use_id": None}
        result = {"message_id": next(self._ids), "duplicate": duplicate}
        self.call(p, "enqueue", t0, t0 + 1 if t1 is None else t1, value, result, outcome)

    def deliver(
        self,
        key: str,
        t: float,
        *,
        session: str = "s1",
        attempt: int = 1,
        lease_ms: float | None = 30_000,
        p: str = "consumer",
        token: int = 0,
        lease_end: float | None = None,
    ) -> None:
        """The lease ends ``lease_ms`` after ``t``, or at ``lease_end`` if given."""
        if lease_end is not None:
            lease_ms = lease_end - t
        lease = None if lease_ms is None else int(BASE_MS + t + lease_ms)
        op = self._op(
            p,
            "deliver",
            "invoke",
            t,
            {
                "session": session,
                "key": key,
                "message_id": 0,
                "attempt": attempt,
                "token": token,
                "lease_expires_at_ms": lease,
            },
        )
        self._op(p, "deliver", "ok", t, self.ops[-1].value, op)

    def ack(
        self,
        key: str,
        t0: float,
        t1: float | None = None,
        *,
        session: str = "s1",
        outcome: str = "ok",
        p: str = "consumer",
        f: str = "ack",
        **extra: Any,
    ) -> None:
        result = {"error": "StaleClaimError: stale"} if outcome == "fail" else {}
        self.call(
            p,
            f,
            t0,
            t0 + 1 if t1 is None else t1,
            {"session": session, "key": key, "message_id": 0, "token": 0, **extra},
            result,
            outcome,
        )

    def flow(self, key: str, t: float, *, session: str = "s1", p: str = "consumer") -> None:
        """Enqueue at t, deliver at t+2, ack at t+3..t+4."""
        self.enqueue(key, t, session=session)
        self.deliver(key, t + 2, session=session, p=p)
        self.ack(key, t + 3, session=session, p=p)

    def store(self, key: str, status: str, session: str = "s1") -> None:
        self.final.append({"message_id": 0, "session": session, "key": key, "status": status})

    def check(self, **options: Any) -> CheckResult:
        return check_history(complete_history(self.ops), self.final, **options)


def nonzero(result: CheckResult) -> dict[str, int]:
    return {k: v for k, v in result.counts.items() if v}


# -- the classes of a message ----------------------------------------------------------------


def test_enqueued_delivered_and_acked_is_ok() -> None:
    h = H()
    h.flow("k1", 0)
    result = h.check()
    assert nonzero(result) == {"ok": 1}
    assert result.messages == 1 and result.valid()


def test_failed_without_retry_and_stored_dead_is_ok() -> None:
    h = H()
    h.enqueue("k1", 0)
    h.deliver("k1", 2)
    h.ack("k1", 3, f="fail", retry=False)
    h.store("k1", "dead")
    assert nonzero(h.check()) == {"ok": 1}


def test_enqueued_and_never_seen_is_lost() -> None:
    h = H()
    h.enqueue("k1", 0)
    result = h.check()
    assert nonzero(result) == {"lost": 1}
    assert result.anomalies() == {"lost": 1}
    assert not result.valid()
    assert result.examples["lost"] == [
        "k1 (session s1): enqueue returned at 0.001s; never delivered; not stored"
    ]


def test_delivered_then_gone_without_any_ack_is_lost() -> None:
    """An engine that deletes on claim (at-most-once) loses what a killed consumer held."""
    h = H()
    h.enqueue("k1", 0)
    h.deliver("k1", 2, p="killed")
    result = h.check()
    assert nonzero(result) == {"lost": 1}
    assert "delivered 1x, never acknowledged" in result.examples["lost"][0]


def test_an_ack_cut_short_by_a_kill_counts_when_the_message_is_gone() -> None:
    h = H()
    h.enqueue("k1", 0)
    h.deliver("k1", 2)
    h.ack("k1", 3, outcome="none")
    assert nonzero(h.check()) == {"ok": 1}


def test_an_ack_cut_short_while_the_message_is_still_stored_is_unacked() -> None:
    h = H()
    h.enqueue("k1", 0)
    h.deliver("k1", 2)
    h.ack("k1", 3, outcome="none")
    h.store("k1", "processing")
    assert nonzero(h.check()) == {"unacked": 1}


@pytest.mark.parametrize("status", ["pending", "processing"])
def test_stored_but_unfinished_at_the_end_is_unacked(status: str) -> None:
    h = H()
    h.enqueue("k1", 0)
    h.enqueue("k2", 2)
    h.deliver("k1", 4)
    h.store("k1", status)
    h.store("k2", "pending")
    result = h.check()
    assert nonzero(result) == {"unacked": 2}
    assert result.valid()


@pytest.mark.parametrize("where", ["delivered", "stored"])
def test_a_message_never_enqueued_is_unexpected(where: str) -> None:
    h = H()
    h.flow("k1", 0)
    if where == "delivered":
        h.deliver("ghost", 10)
    else:
        h.store("ghost", "pending")
    result = h.check()
    assert nonzero(result) == {"ok": 1, "unexpected": 1}
    assert "ghost" in result.examples["unexpected"][0]
    assert "no enqueue of it" in result.examples["unexpected"][0]


def test_a_duplicate_enqueue_result_is_not_a_message_of_its_own() -> None:
    h = H()
    h.enqueue("k1", 0)
    h.enqueue("k2", 2, duplicate=True)  # same tool_use_id: returns k1's id, adds nothing
    h.deliver("k1", 4)
    h.ack("k1", 5)
    result = h.check()
    assert nonzero(result) == {"ok": 1}
    assert result.messages == 1


def test_a_message_whose_enqueue_said_duplicate_yet_appears_is_unexpected() -> None:
    h = H()
    h.flow("k1", 0)
    h.enqueue("k2", 10, duplicate=True)
    h.deliver("k2", 12)
    result = h.check()
    assert result.counts["unexpected"] == 1
    assert "duplicate=True" in result.examples["unexpected"][0]


@pytest.mark.parametrize("outcome", ["none", "info", "fail"])
def test_an_enqueue_with_unknown_or_failed_outcome_that_appears_is_recovered(
    outcome: str,
) -> None:
    """The producer was killed inside enqueue (or it timed out, or raised), yet it landed."""
    h = H()
    h.enqueue("k1", 0, outcome=outcome)
    h.deliver("k1", 5)
    h.ack("k1", 6)
    h.enqueue("k2", 10, outcome=outcome)
    h.store("k2", "pending")
    result = h.check()
    assert nonzero(result) == {"recovered": 2}
    assert result.valid()


def test_an_enqueue_with_unknown_outcome_never_seen_is_no_message() -> None:
    h = H()
    h.enqueue("k1", 0, outcome="none")
    result = h.check()
    assert nonzero(result) == {}
    assert result.messages == 0 and result.valid()


def test_a_message_removed_by_a_clear_of_its_session_is_cleared() -> None:
    h = H()
    h.enqueue("k1", 0)
    h.call("suite", "clear", 5, 6, {"session": "s1"}, {"count": 1})
    assert nonzero(h.check()) == {"cleared": 1}


def test_a_clear_of_another_session_or_before_the_enqueue_does_not_excuse_a_loss() -> None:
    h = H()
    h.call("suite", "clear", 0, 1, {"session": "s1"}, {"count": 0})
    h.enqueue("k1", 5)
    h.call("suite", "clear", 10, 11, {"session": "s2"}, {"count": 0})
    assert nonzero(h.check()) == {"lost": 1}


# -- duplicates and redeliveries -------------------------------------------------------------


def test_delivered_again_after_a_successful_ack_is_duplicated() -> None:
    h = H()
    h.flow("k1", 0)
    h.deliver("k1", 20, attempt=2, p="consumer-2")
    h.ack("k1", 21, p="consumer-2")
    result = h.check()
    assert nonzero(result) == {"ok": 1, "duplicated": 1}
    assert "delivered again at 0.020s (attempt 2, consumer-2)" in result.examples["duplicated"][0]


def test_still_stored_after_a_successful_ack_is_duplicated() -> None:
    h = H()
    h.flow("k1", 0)
    h.store("k1", "pending")
    assert nonzero(h.check()) == {"ok": 1, "duplicated": 1}


def test_redelivery_after_a_stall_is_fine_and_counted() -> None:
    """consumer-1 stalls past its lease; consumer-2 gets the message again (attempt 2) and acks;
    consumer-1's late ack is refused. Then the next message comes."""
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.deliver("a", 10, lease_ms=100, p="c1")
    h.deliver("a", 150, attempt=2, lease_ms=100, p="c2")
    h.ack("a", 160, p="c2")
    h.deliver("b", 170, p="c2")
    h.ack("b", 180, p="c2")
    h.ack("a", 300, outcome="fail", p="c1")
    result = h.check()
    assert nonzero(result) == {"ok": 2, "redelivered": 1}
    assert result.valid()


def test_a_stale_delivery_logged_late_is_not_a_duplicate() -> None:
    """c1 claims (attempt 1), is frozen before it logs; c2 claims again (attempt 2) and acks;
    c1 wakes up and logs its old delivery after that ack."""
    h = H()
    h.enqueue("a", 0)
    h.deliver("a", 150, attempt=2, lease_ms=100, p="c2")
    h.ack("a", 160, p="c2")
    h.deliver("a", 500, attempt=1, lease_end=110, p="c1")  # logged late, long after its lease
    h.ack("a", 501, outcome="fail", p="c1")
    result = h.check()
    assert nonzero(result) == {"ok": 1, "redelivered": 1}


def test_a_stale_delivery_logged_late_after_a_reset_is_bounded_by_the_next_attempt() -> None:
    """c1 claims a (long lease) and freezes before logging; a reset returns a and c2 gets it
    (attempt 2), acks it, then b. c1's old delivery is logged last: its claim came before the
    claim of attempt 2, so it is neither a duplicate nor out of order."""
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.call("suite", "reset", 10, 11, {"session": None}, {"count": 1})
    h.deliver("a", 20, attempt=2, p="c2")
    h.ack("a", 21, p="c2")
    h.deliver("b", 30, p="c2")
    h.ack("b", 31, p="c2")
    h.deliver("a", 500, attempt=1, lease_end=30_000, p="c1")
    h.ack("a", 501, outcome="fail", p="c1")
    result = h.check()
    assert result.anomalies(frozenset({"concurrent"})) == {}  # P2 cannot tell: a blind spot
    assert result.counts["redelivered"] == 1


def test_a_lost_message_is_no_skip_of_the_later_ones() -> None:
    h = H()
    h.enqueue("a", 0)
    h.flow("b", 5)
    h.flow("c", 8)
    assert nonzero(h.check()) == {"ok": 2, "lost": 1}


# -- delivery to the wrong session -----------------------------------------------------------


def test_a_message_delivered_to_a_consumer_of_another_session_is_misdelivered() -> None:
    h = H()
    h.enqueue("b1", 0, session="s2")
    h.deliver("b1", 3, session="s1")
    h.ack("b1", 4, session="s1")
    result = h.check()
    assert result.counts["misdelivered"] == 1
    assert result.examples["misdelivered"] == [
        "b1: of session s2, delivered to consumer iterating session s1 at 0.003s"
    ]


# -- P1: order within a session --------------------------------------------------------------


def test_a_later_message_delivered_while_an_earlier_one_is_pending_is_a_skip() -> None:
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.deliver("b", 5)
    h.ack("b", 6)
    h.store("a", "pending")
    result = h.check()
    assert nonzero(result) == {"ok": 1, "unacked": 1, "skip": 1}
    assert result.examples["skip"] == [
        "session s1: b delivered at 0.005s while a, enqueued before it, was outstanding until never"
    ]


def test_a_redelivery_after_a_later_message_is_non_monotonic() -> None:
    """a fails with retry; the engine wrongly hands out b first, then a again."""
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.deliver("a", 5)
    h.ack("a", 6, f="fail", retry=True)
    h.deliver("b", 10)
    h.ack("b", 11)
    h.deliver("a", 20, attempt=2)
    h.ack("a", 21)
    result = h.check()
    assert result.counts["non_monotonic"] == 1
    assert result.counts["skip"] == 1  # a was still outstanding when b came
    assert result.examples["non_monotonic"] == [
        "session s1: a delivered at 0.020s after b at 0.010s, though enqueued before it"
    ]


def test_each_violating_pair_is_counted_once() -> None:
    h = H()
    h.enqueue("a", 0)
    for i, key in enumerate(["b", "c", "d"]):
        h.enqueue(key, 2 + i * 2)
    for i, key in enumerate(["b", "c", "d", "a"]):
        h.deliver(key, 20 + i * 10)
        h.deliver(key, 21 + i * 10, attempt=2)  # a redelivery: still one pair per message
        h.ack(key, 22 + i * 10)
    result = h.check()
    assert result.counts["skip"] == 3  # (a, b), (a, c), (a, d)
    assert result.counts["non_monotonic"] == 3
    assert result.counts["redelivered"] == 4


def test_overlapping_enqueues_have_no_order() -> None:
    h = H()
    h.enqueue("a", 0, 10)
    h.enqueue("b", 5, 15)  # invoked before a returned: either order is right
    h.deliver("b", 20)
    h.ack("b", 21)
    h.deliver("a", 22)
    h.ack("a", 23)
    assert h.check().valid()


def test_sessions_are_ordered_independently() -> None:
    h = H()
    h.enqueue("a", 0, session="s1")
    h.enqueue("b", 2, session="s2")
    h.deliver("b", 5, session="s2")
    h.ack("b", 6, session="s2")
    h.deliver("a", 7, session="s1")
    h.ack("a", 8, session="s1")
    assert nonzero(h.check()) == {"ok": 2}


def test_a_dead_message_does_not_hold_up_later_ones() -> None:
    """a's consumer died; after max_attempts the engine marks it dead and moves on to b."""
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.deliver("a", 5, lease_ms=50, p="dies")
    h.deliver("b", 100)
    h.ack("b", 101)
    h.store("a", "dead")
    assert nonzero(h.check()) == {"ok": 2}


def test_a_last_attempt_logged_late_does_not_look_out_of_order() -> None:
    """c1 claims a's last attempt, is frozen before logging past its lease; the engine marks a
    dead and delivers b; c1 then logs the old delivery. The lease bounds when that claim was."""
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.deliver("b", 200)
    h.ack("b", 201)
    h.deliver("a", 500, attempt=3, lease_end=95, p="c1")  # claimed before 95, logged at 500
    h.store("a", "dead")
    assert h.check().valid()


def test_a_cleared_message_does_not_hold_up_later_ones() -> None:
    h = H()
    h.enqueue("a", 0)
    h.call("suite", "clear", 5, 6, {"session": "s1"}, {"count": 1})
    h.enqueue("b", 10)
    h.deliver("b", 12)
    h.ack("b", 13)
    assert nonzero(h.check()) == {"ok": 1, "cleared": 1}


def test_a_refused_ack_does_not_end_an_earlier_message() -> None:
    """a's ack raised StaleClaimError (it changed nothing), so a was still pending."""
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.deliver("a", 5)
    h.ack("a", 6, outcome="fail")
    h.deliver("b", 10)
    h.ack("b", 11)
    h.store("a", "pending")
    assert h.check().counts["skip"] == 1


# -- P2: one consumer per session ------------------------------------------------------------


def test_two_holds_of_one_session_overlapping_are_concurrent() -> None:
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.deliver("a", 10, p="c1")
    h.deliver("b", 50, p="c2")
    h.ack("b", 90, p="c2")
    h.ack("a", 100, p="c1")
    result = h.check()
    assert result.counts["concurrent"] == 1
    assert result.examples["concurrent"] == [
        "session s1: a held by c1 from 0.010s to 0.100s and b held by c2 from 0.050s to "
        "0.090s overlap by 40.0 ms"
    ]
    assert h.check(tolerance_ms=40.5).counts["concurrent"] == 0


def test_holds_in_different_sessions_may_overlap() -> None:
    h = H()
    h.enqueue("a", 0, session="s1")
    h.enqueue("b", 2, session="s2")
    h.deliver("a", 10, p="c1", session="s1")
    h.deliver("b", 11, p="c2", session="s2")
    h.ack("b", 100, p="c2", session="s2")
    h.ack("a", 100, p="c1", session="s1")
    assert h.check().counts["concurrent"] == 0


def test_a_hold_ends_at_its_lease() -> None:
    h = H()
    h.enqueue("a", 0)
    h.deliver("a", 10, lease_ms=60, p="dies")
    h.deliver("a", 75, attempt=2, p="c2")
    h.ack("a", 80, p="c2")
    assert h.check().counts["concurrent"] == 0


def test_a_hold_ends_at_a_reset_of_its_session() -> None:
    """Startup recovery: the holder died, a reset returns its message at once."""
    h = H()
    h.enqueue("a", 0)
    h.deliver("a", 10, p="dies")
    h.call("suite", "reset", 50, 51, {"session": None}, {"count": 1})
    h.deliver("a", 60, attempt=2, p="c2")
    h.ack("a", 200, p="c2")
    assert h.check().counts["concurrent"] == 0


def test_an_unlogged_reset_leaves_the_old_hold_standing() -> None:
    """Without the reset in the history the checker cannot tell it from a double claim."""
    h = H()
    h.enqueue("a", 0)
    h.deliver("a", 10, p="dies")
    h.deliver("a", 60, attempt=2, p="c2")
    h.ack("a", 200, p="c2")
    assert h.check().counts["concurrent"] == 1


def test_an_extended_lease_keeps_the_hold() -> None:
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.deliver("a", 10, lease_ms=50, p="c1")
    h.call(
        "c1",
        "extend",
        40,
        41,
        {"session": "s1", "key": "a", "message_id": 0, "token": 0},
        {"lease_expires_at_ms": BASE_MS + 300},
    )
    h.deliver("b", 100, p="c2")
    h.ack("b", 150, p="c2")
    assert h.check().counts["concurrent"] == 1


def test_a_delivery_without_a_lease_holds_until_its_ack_only() -> None:
    h = H()
    h.enqueue("a", 0)
    h.enqueue("b", 2)
    h.deliver("a", 10, lease_ms=None, p="dies")
    h.deliver("b", 100, lease_ms=None, p="c2")
    h.ack("b", 200, p="c2")
    assert h.check().counts["concurrent"] == 0
    h.deliver("a", 110, lease_ms=None, attempt=2, p="c3")
    h.ack("a", 300, p="c3")
    assert h.check().counts["concurrent"] == 1


# -- the result ------------------------------------------------------------------------------


def test_every_count_is_always_present() -> None:
    result = H().check()
    assert set(result.counts) == set(COUNTS)
    assert set(COUNTS) >= set(FAILING)
    assert result.valid() and result.messages == 0


def test_allowed_anomalies_are_counted_but_do_not_fail() -> None:
    h = H()
    h.enqueue("a", 0)
    h.flow("b", 5)
    h.store("a", "pending")
    h.enqueue("lost", 1, session="s2")
    result = h.check()
    assert result.anomalies() == {"lost": 1, "skip": 1}
    assert result.anomalies(frozenset({"lost"})) == {"skip": 1}
    assert result.valid(frozenset({"lost", "skip"}))
    assert not result.valid(frozenset({"lost"}))


def test_examples_are_capped() -> None:
    h = H()
    for i in range(12):
        h.enqueue(f"k{i}", i * 2)
    result = h.check()
    assert result.counts["lost"] == 12
    assert len(result.examples["lost"]) == 5


def test_to_json_is_plain_json() -> None:
    h = H()
    h.enqueue("a", 0)
    doc = json.loads(json.dumps(h.check().to_json()))
    assert doc["valid"] is False
    assert doc["anomalies"] == {"lost": 1}
    assert doc["counts"]["lost"] == 1 and doc["messages"] == 1
    assert list(doc["examples"]) == ["lost"]


def test_a_saved_history_can_be_rechecked_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = H()
    h.enqueue("a", 0)
    h.flow("b", 10)
    h.store("a", "pending")
    h.enqueue("lost", 1, session="s2")
    save_history(complete_history(h.ops), tmp_path / "history.jsonl")
    (tmp_path / "final.json").write_text(json.dumps(h.final))
    assert main([str(tmp_path / "history.jsonl"), "--final", str(tmp_path / "final.json")]) == 1
    assert json.loads(capsys.readouterr().out)["anomalies"] == {"lost": 1, "skip": 1}
    assert main([str(tmp_path / "history.jsonl"), "--allow", "lost,skip"]) == 0


# -- properties: a simulated correct FIFO queue ----------------------------------------------

LEASE_MS = 100
MAX_ATTEMPTS = 3


@dataclass
class Row:
    id: int
    session: str
    key: str
    tool_use_id: str | None
    status: str = "pending"
    attempt: int = 0
    token: int | None = None
    lease_end_ms: int = 0
    available_ms: int = 0


class FifoQueue:
    """A correct queue with the contract's semantics (cf. engines/memory.py), in simulated time."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)

    def enqueue(self, session: str, key: str, tool_use_id: str | None) -> tuple[int, bool]:
        for row in self.rows.values():
            if tool_use_id and row.tool_use_id == tool_use_id and row.status != "dead":
                return row.id, True
        row = Row(next(self._ids), session, key, tool_use_id)
        self.rows[row.id] = row
        return row.id, False

    def claim(self, session: str, now_ms: int) -> Row | None:
        for row in list(self.rows.values()):
            if row.session != session or row.status == "dead":
                continue
            if row.status == "pending" and row.available_ms > now_ms:
                return None
            if row.status == "processing":
                if row.lease_end_ms > now_ms:
                    return None
                if row.attempt >= MAX_ATTEMPTS:
                    row.status = "dead"
                    continue
            row.status, row.attempt, row.token = "processing", row.attempt + 1, next(self._tokens)
            row.lease_end_ms = now_ms + LEASE_MS
            return replace(row)
        return None

    def _held(self, row_id: int, token: int | None) -> Row | None:
        row = self.rows.get(row_id)
        return row if row and row.status == "processing" and row.token == token else None

    def ack(self, row_id: int, token: int | None) -> bool:
        if self._held(row_id, token) is None:
            return False
        del self.rows[row_id]
        return True

    def fail(self, row_id: int, token: int | None, retry: bool, now_ms: int) -> bool:
        row = self._held(row_id, token)
        if row is None:
            return False
        if retry and row.attempt < MAX_ATTEMPTS:
            row.status, row.token, row.available_ms = "pending", None, now_ms + 5
        else:
            row.status = "dead"
        return True

    def extend(self, row_id: int, token: int | None, now_ms: int) -> int | None:
        row = self._held(row_id, token)
        if row is None:
            return None
        row.lease_end_ms = now_ms + LEASE_MS
        return row.lease_end_ms

    def reset(self, session: str | None) -> int:
        rows = [
            r
            for r in self.rows.values()
            if r.status == "processing" and session in (None, r.session)
        ]
        for r in rows:
            r.status, r.token = "pending", None
        return len(rows)

    def clear(self, session: str) -> int:
        gone = [i for i, r in self.rows.items() if r.status == "pending" and r.session == session]
        for i in gone:
            del self.rows[i]
        return len(gone)

    def final(self) -> list[dict[str, Any]]:
        return [
            {"message_id": r.id, "session": r.session, "key": r.key, "status": r.status}
            for r in self.rows.values()
        ]


@dataclass(frozen=True)
class Scenario:
    sessions: int
    producers: int
    per_producer: int
    consumers: int
    kills: bool
    suite_ops: bool
    reset_before_drain: bool
    drain_limit: int | None


Proc = Generator[None, None, None]


class Sim:
    """Processes as generators, stepped in an order drawn by Hypothesis, on a simulated clock.

    A step may kill the process instead (its open call stays without completion). After the
    schedule every process left is stopped the same way, then a drainer heals and drains.
    """

    def __init__(self, scenario: Scenario, schedule: list[int], directory: Path) -> None:
        self.sc, self.schedule, self.directory = scenario, schedule, directory
        self.now_ns = BASE_MS * MS
        self.q = FifoQueue()
        self.sessions = [f"s{i}" for i in range(scenario.sessions)]
        self.unlogged: set[str] = set()  # live consumers between claiming and logging
        self._draws = iter(schedule[::-1])

    def draw(self, n: int) -> int:
        return next(self._draws, 0) % n

    @property
    def now_ms(self) -> int:
        return self.now_ns // MS

    def writer(self, name: str) -> HistoryWriter:
        return HistoryWriter(self.directory, name, clock=lambda: self.now_ns)

    def run(self) -> tuple[list[Op], list[dict[str, Any]]]:
        procs: dict[str, Iterator[None]] = {
            **{f"producer-{i}": self.producer(f"producer-{i}") for i in range(self.sc.producers)},
            **{f"consumer-{i}": self.consumer(f"consumer-{i}") for i in range(self.sc.consumers)},
        }
        if self.sc.suite_ops:
            procs["suite"] = self.suite()
        for choice in self.schedule:
            if not procs:
                break
            self.now_ns += 1_000 + (choice % 64) * 700_000  # 1 µs .. ~44 ms per step
            name = sorted(procs)[(choice >> 6) % len(procs)]
            if self.sc.kills and (choice >> 12) % 16 == 0:
                del procs[name]
                self.unlogged.discard(name)
            elif next(procs[name], StopIteration) is StopIteration:
                del procs[name]
        self.drain()
        return load_history(self.directory), self.q.final()

    def producer(self, name: str) -> Proc:
        w, tool = self.writer(name), None
        for i in range(self.sc.per_producer):
            session, key = self.sessions[self.draw(len(self.sessions))], f"{name}-{i}"
            tool = tool if tool and self.draw(4) == 0 else (f"t-{key}" if self.draw(3) else None)
            op = w.invoke("enqueue", {"session": session, "key": key, "tool_use_id": tool})
            yield
            if self.draw(10) == 0:
                w.fail(op, "enqueue", {"error": "InvalidMessageError: refused"})
                continue
            message_id, duplicate = self.q.enqueue(session, key, tool)
            yield
            w.ok(op, "enqueue", {"message_id": message_id, "duplicate": duplicate})
            yield

    def consumer(self, name: str) -> Proc:
        w = self.writer(name)
        while True:
            session = self.sessions[self.draw(len(self.sessions))]
            row = self.q.claim(session, self.now_ms)
            if row is None:
                yield
                continue
            self.unlogged.add(name)
            if self.draw(2):
                yield  # maybe frozen between claiming and logging
            w.event("deliver", deliver_value(row))
            self.unlogged.discard(name)
            yield
            yield from self.settle(w, row)

    def settle(self, w: HistoryWriter, row: Row) -> Proc:
        """Ack the delivered row (maybe extending its lease first) or fail it."""
        value = {"session": row.session, "key": row.key, "message_id": row.id, "token": row.token}
        action = self.draw(12)
        if action == 0:
            op = w.invoke("extend", value)
            yield
            lease = self.q.extend(row.id, row.token, self.now_ms)
            if lease is None:
                w.fail(op, "extend", {"error": "StaleClaimError: stale"})
            else:
                w.ok(op, "extend", {"lease_expires_at_ms": lease})
            yield
        f = "fail" if action >= 10 else "ack"
        extra = {"retry": action == 10} if f == "fail" else {}
        op = w.invoke(f, {**value, **extra})
        yield
        done = (
            self.q.ack(row.id, row.token)
            if f == "ack"
            else self.q.fail(row.id, row.token, action == 10, self.now_ms)
        )
        yield
        if done:
            w.ok(op, f, {})
        else:
            w.fail(op, f, {"error": "StaleClaimError: stale"})
        yield

    def suite(self) -> Proc:
        w = self.writer("suite")
        while True:
            yield
            if self.draw(6):
                continue
            session = self.sessions[self.draw(len(self.sessions))]
            if self.draw(2):
                op = w.invoke("clear", {"session": session})
                yield
                count = self.q.clear(session)
                yield
                w.ok(op, "clear", {"count": count})
            elif not self.unlogged:  # see the checker's docstring: its one blind spot
                op = w.invoke("reset", {"session": session})
                w.ok(op, "reset", {"count": self.q.reset(session)})

    def drain(self) -> None:
        """Heal (reset, or wait out the leases), then deliver and ack until empty or limit."""
        w = self.writer("drainer")
        self.now_ns += 1_000
        if self.sc.reset_before_drain:
            op = w.invoke("reset", {"session": None})
            w.ok(op, "reset", {"count": self.q.reset(None)})
        else:
            self.now_ns += (LEASE_MS + 1) * MS
        delivered = 0
        limit = self.sc.drain_limit if self.sc.drain_limit is not None else 10**6
        while delivered < limit and any(r.status != "dead" for r in self.q.rows.values()):
            self.now_ns += LEASE_MS * MS if delivered else 1_000  # wait for leases and retries
            for session in self.sessions:
                while delivered < limit and (row := self.q.claim(session, self.now_ms)):
                    self.now_ns += 1_000
                    w.event("deliver", deliver_value(row))
                    self.now_ns += 1_000
                    op = w.invoke(
                        "ack",
                        {
                            "session": session,
                            "key": row.key,
                            "message_id": row.id,
                            "token": row.token,
                        },
                    )
                    assert self.q.ack(row.id, row.token)
                    self.now_ns += 1_000
                    w.ok(op, "ack", {})
                    delivered += 1


def deliver_value(row: Row) -> dict[str, Any]:
    return {
        "session": row.session,
        "key": row.key,
        "message_id": row.id,
        "attempt": row.attempt,
        "token": row.token,
        "lease_expires_at_ms": row.lease_end_ms,
    }


def scenarios(*, faults: bool) -> st.SearchStrategy[Scenario]:
    return st.builds(
        Scenario,
        sessions=st.integers(1, 3),
        producers=st.integers(1, 2),
        per_producer=st.integers(1, 10),
        consumers=st.integers(1, 3),
        kills=st.booleans() if faults else st.just(False),
        suite_ops=st.booleans() if faults else st.just(False),
        reset_before_drain=st.booleans(),
        drain_limit=(st.none() | st.integers(0, 5)) if faults else st.none(),
    )


SCHEDULES = st.lists(st.integers(0, 2**16 - 1), min_size=20, max_size=250)


def simulate(scenario: Scenario, schedule: list[int]) -> tuple[list[Op], list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as directory:
        return Sim(scenario, schedule, Path(directory)).run()


PROPERTY = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@PROPERTY
@given(scenarios(faults=True), SCHEDULES)
def test_histories_of_a_correct_queue_always_check_valid(
    scenario: Scenario, schedule: list[int]
) -> None:
    ops, final = simulate(scenario, schedule)
    result = check_history(ops, final, tolerance_ms=0)
    assert result.valid(), result.to_json()
    assert (
        result.counts["ok"]
        + result.counts["recovered"]
        + result.counts["unacked"]
        + result.counts["cleared"]
        == result.messages
    )


@PROPERTY
@given(scenarios(faults=False), SCHEDULES)
def test_without_faults_every_message_is_ok(scenario: Scenario, schedule: list[int]) -> None:
    ops, final = simulate(scenario, schedule)
    result = check_history(ops, final, tolerance_ms=0)
    enqueued = sum(
        1 for op in ops if op.f == "enqueue" and op.phase == "ok" and not op.value["duplicate"]
    )
    assert result.counts["ok"] == enqueued, result.to_json()
    assert result.messages == enqueued + result.counts["recovered"]  # cut short by the end
    assert all(row["status"] == "dead" for row in final)


# -- mutations of correct histories are caught -----------------------------------------------


def acked_keys(ops: list[Op], final: list[dict[str, Any]]) -> list[str]:
    """Keys enqueued (not as duplicates), acked ok and gone: cleanly processed messages."""
    calls = pair(ops)
    stored = {row["key"] for row in final}
    enqueued = {
        i.value["key"]
        for i, d in calls
        if i.f == "enqueue" and d.phase == "ok" and not d.value["duplicate"]
    }
    acked = {i.value["key"] for i, d in calls if i.f == "ack" and d.phase == "ok"}
    return sorted((enqueued & acked) - stored)


def pair(ops: list[Op]) -> list[tuple[Op, Op]]:
    done = {(op.process, op.op_id): op for op in ops if op.phase != "invoke"}
    return [(op, done[op.process, op.op_id]) for op in ops if op.phase == "invoke"]


def without_key(ops: list[Op], f: set[str], key: str) -> list[Op]:
    """Drop the calls of kinds ``f`` on ``key``, invokes and completions alike."""
    gone = {(i.process, i.op_id) for i, _ in pair(ops) if i.f in f and i.value.get("key") == key}
    return [op for op in ops if (op.process, op.op_id) not in gone]


def extra_delivery(ops: list[Op], key: str, session: str, t: int, attempt: int) -> list[Op]:
    value = {
        "session": session,
        "key": key,
        "message_id": 0,
        "attempt": attempt,
        "token": -1,
        "lease_expires_at_ms": t // MS + 1000,
    }
    return [
        *ops,
        Op("ghost", 0, "deliver", "invoke", t, value, 0),
        Op("ghost", 1, "deliver", "ok", t, value, 0),
    ]


MUTATION = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@MUTATION
@given(scenarios(faults=False), SCHEDULES, st.data())
def test_dropping_a_message_s_deliveries_is_caught_as_lost(
    scenario: Scenario, schedule: list[int], data: st.DataObject
) -> None:
    ops, final = simulate(scenario, schedule)
    keys = acked_keys(ops, final)
    assume(keys)
    key = data.draw(st.sampled_from(keys))
    result = check_history(without_key(ops, {"deliver", "ack", "fail", "extend"}, key), final)
    assert result.counts["lost"] == 1
    assert key in result.examples["lost"][0]


@MUTATION
@given(scenarios(faults=False), SCHEDULES, st.data())
def test_swapping_two_deliveries_is_caught_as_out_of_order(
    scenario: Scenario, schedule: list[int], data: st.DataObject
) -> None:
    ops, final = simulate(scenario, schedule)
    pairs = ordered_pairs(ops, set(acked_keys(ops, final)))
    assume(pairs)
    first, second = data.draw(st.sampled_from(pairs))
    swapped = swap_keys(ops, first, second)
    result = check_history(swapped, final)
    assert result.counts["skip"] + result.counts["non_monotonic"] >= 1, result.to_json()


def ordered_pairs(ops: list[Op], clean: set[str]) -> list[tuple[str, str]]:
    """(a, b) of one session, a's enqueue returned before b's was invoked, each delivered once,
    never failed, a delivered before b."""
    calls = pair(ops)
    enq = {
        i.value["key"]: (i.value["session"], i.time_ns, d.time_ns)
        for i, d in calls
        if i.f == "enqueue" and d.phase == "ok" and not d.value["duplicate"]
    }
    deliveries: dict[str, list[int]] = defaultdict(list)
    failed = {i.value["key"] for i, _ in calls if i.f == "fail"}
    for i, _ in calls:
        if i.f == "deliver":
            deliveries[i.value["key"]].append(i.time_ns)
    once = sorted(k for k in clean if len(deliveries[k]) == 1 and k not in failed)
    return [
        (a, b)
        for a in once
        for b in once
        if enq[a][0] == enq[b][0] and enq[a][2] < enq[b][1] and deliveries[a][0] < deliveries[b][0]
    ]


def swap_keys(ops: list[Op], a: str, b: str) -> list[Op]:
    """Swap which message two deliver events name (each keeps its time, lease and attempt)."""
    other = {a: b, b: a}

    def swap(op: Op) -> Op:
        if op.f != "deliver" or op.value.get("key") not in other:
            return op
        return replace(op, value={**op.value, "key": other[op.value["key"]]})

    return [swap(op) for op in ops]


@MUTATION
@given(scenarios(faults=False), SCHEDULES, st.data())
def test_a_delivery_after_the_ack_is_caught_as_duplicated(
    scenario: Scenario, schedule: list[int], data: st.DataObject
) -> None:
    ops, final = simulate(scenario, schedule)
    keys = acked_keys(ops, final)
    assume(keys)
    key = data.draw(st.sampled_from(keys))
    acked = max(d.time_ns for i, d in pair(ops) if i.f == "ack" and i.value["key"] == key)
    session = next(i.value["session"] for i, _ in pair(ops) if i.value.get("key") == key)
    result = check_history(extra_delivery(ops, key, session, acked + MS, 9), final)
    assert result.counts["duplicated"] == 1, result.to_json()


@MUTATION
@given(scenarios(faults=False), SCHEDULES, st.data())
def test_a_second_holder_of_a_session_is_caught_as_concurrent(
    scenario: Scenario, schedule: list[int], data: st.DataObject
) -> None:
    ops, final = simulate(scenario, schedule)
    held = [
        i
        for i, _ in pair(ops)
        if i.f == "deliver" and i.value["lease_expires_at_ms"] * MS > i.time_ns + 1
    ]  # not logged past its lease
    assume(held)
    victim = data.draw(st.sampled_from(held))
    ghost = extra_delivery(ops, "ghost", victim.value["session"], victim.time_ns + 1, 1)
    result = check_history(ghost, final, tolerance_ms=0)
    assert result.counts["concurrent"] >= 1, result.to_json()
    assert result.counts["unexpected"] == 1
