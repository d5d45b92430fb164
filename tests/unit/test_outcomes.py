"""Per-property outcomes (partial, expected-fail that names its anomaly) and the declared-matrix
check CI runs on every engine."""

from __future__ import annotations

from typing import Any

from obsqueue.conformance.declared import Expectation, mismatches, shipped_engines
from obsqueue.conformance.outcomes import TestRecord, property_outcome


def rec(name: str, outcome: str = "pass", reason: str = "", **extra: Any) -> TestRecord:
    return TestRecord(name, ("P4", "P5"), outcome, reason, **extra)


def test_all_passed_is_pass() -> None:
    assert property_outcome("P4", [rec("a"), rec("b")])[0] == "pass"


def test_passed_and_unsupported_is_partial_naming_what_was_not_tested() -> None:
    outcome, reason, untested = property_outcome(
        "P4", [rec("a"), rec("kill9", "unsupported", "sqlite lacks server_crash_durable")]
    )
    assert outcome == "partial"
    assert "kill9 (unsupported: sqlite lacks server_crash_durable)" in reason
    assert untested == ["kill9 (unsupported: sqlite lacks server_crash_durable)"]


def test_not_selected_makes_partial_and_nothing_selected_is_unknown() -> None:
    left_out = rec("b", "not-selected", "not selected (-k a)")
    assert property_outcome("P4", [rec("a"), left_out])[0] == "partial"
    assert property_outcome("P4", [left_out])[0] == "unknown"


def test_only_unsupported_is_unsupported_and_a_failure_wins() -> None:
    assert property_outcome("P4", [rec("a", "unsupported", "lacks x")])[0] == "unsupported"
    assert property_outcome("P4", [rec("a"), rec("b", "fail", "boom")])[0] == "fail"


def judged(outcome: str, verdicts: dict[str, dict[str, int]]) -> TestRecord:
    return rec(
        "kill9",
        outcome,
        "xfail reason" if outcome == "expected-fail" else "",
        expected={"P4": ["lost"], "P5": ["duplicated"]},
        verdicts=verdicts,
    )


def test_expected_anomaly_is_expected_fail_for_its_property_only() -> None:
    r = judged("expected-fail", {"P4": {"lost": 12}, "P5": {}})
    outcome, reason = r.outcome_for("P4")
    assert outcome == "expected-fail"
    assert reason == "kill9: expected lost > 0, saw lost=12"
    assert r.outcome_for("P5") == (
        "pass",
        "kill9: expected duplicated > 0, but it held in this run",
    )


def test_an_anomaly_not_expected_is_a_fail() -> None:
    r = judged("fail", {"P4": {"lost": 3, "non_monotonic": 1}, "P5": {}})
    outcome, reason = r.outcome_for("P4")
    assert outcome == "fail"
    assert "non_monotonic=1" in reason and "expected only lost > 0" in reason


def test_a_failure_outside_the_verdict_fails_every_property() -> None:
    r = judged("fail", {})
    r.reason = "call: the queue did not drain after the restart"
    assert r.outcome_for("P4")[0] == "fail" and r.outcome_for("P5")[0] == "fail"


def doc(**outcomes: str) -> dict[str, Any]:
    caps = {"P1": "fifo", "P4": "durable_enqueue"}
    return {
        "engine": "e",
        "complete": True,
        "capabilities": ["fifo"],
        "properties": [
            {
                "id": pid,
                "capability": caps[pid],
                "outcome": o,
                "reason": "why",
                "anomalies": {"lost": 3} if o == "expected-fail" else {},
            }
            for pid, o in outcomes.items()
        ],
    }


def test_declared_matrix_passes_and_differences_are_named() -> None:
    assert mismatches(doc(P1="pass", P4="unsupported")) == []
    assert mismatches(doc(P1="partial", P4="unsupported")) == []
    assert mismatches(doc(P1="fail", P4="pass")) == [
        "e P1: fail, expected pass or partial (declared): why",
        "e P4: pass, expected unsupported (not declared): why",
    ]


def test_declared_expected_fail_must_show_only_its_anomaly() -> None:
    expect = {"P4": Expectation("expected-fail", ("lost",))}
    assert mismatches(doc(P1="pass", P4="expected-fail"), expect) == []
    held = mismatches(doc(P1="pass", P4="pass"), expect)
    assert held == ["e P4: pass, expected expected-fail: why"]
    other = {"P4": Expectation("expected-fail", ("duplicated",))}
    assert "saw ['lost']" in mismatches(doc(P1="pass", P4="expected-fail"), other)[0]


def test_a_defect_caught_in_some_runs_may_also_pass_but_nothing_else() -> None:
    expect = {"P4": Expectation("fail", (), "why", also_passes=True)}
    assert mismatches(doc(P1="pass", P4="fail"), expect) == []
    assert mismatches(doc(P1="pass", P4="pass"), expect) == []
    assert mismatches(doc(P1="pass", P4="expected-fail"), expect) != []
    strict = {"P4": Expectation("fail", (), "why")}
    assert mismatches(doc(P1="pass", P4="pass"), strict) != []


def test_a_partial_run_never_matches() -> None:
    partial = {**doc(P1="pass", P4="unsupported"), "complete": False}
    assert mismatches(partial) == ["e: not a complete run"]


def test_shipped_engines_list_every_engine_once() -> None:
    urls = [e.url for e in shipped_engines()]
    assert len(urls) == len(set(urls)) >= 11
    assert "redis://?server_durability=none" in urls
