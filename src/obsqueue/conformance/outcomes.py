"""Per test and per property: the outcomes of docs/properties.md, and the reason shown for each.

A test ends as pass, fail, unsupported (skipped with ``unsupported: …``: the engine lacks a
capability it needs), expected-fail (it saw only the anomalies its engine's known limitation
names), unknown (skipped with ``unknown: …``, or any other skip) or not-selected (deselected by
``-k`` or ``--obsqueue-property``). A test that judged its anomalies per property
(:meth:`TestRecord.judged`) has one outcome per property instead of one for all.

Per property, the worst news wins: fail > expected-fail > unknown > partial > pass >
unsupported. *partial* is a property some of whose tests passed while the others did not run
(unsupported or not selected); its reason names them. A property is *pass* only when every one
of its tests ran and held, *unsupported* only when none could run for want of a capability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "RANK",
    "UNTESTED",
    "TestRecord",
    "expectation_text",
    "property_outcome",
]

#: How bad the news is, per outcome of a test or a property.
RANK: Final = {
    "fail": 6,
    "expected-fail": 5,
    "unknown": 4,
    "partial": 3,
    "pass": 2,
    "not-selected": 1,
    "unsupported": 0,
}
#: Test outcomes that mean "this part of the property was not tested".
UNTESTED: Final = frozenset({"unsupported", "not-selected"})


def expectation_text(expected: dict[str, list[str]], property_id: str) -> str:
    """``lost > 0`` — the anomalies a known limitation is expected to show for a property."""
    return " or ".join(f"{name} > 0" for name in expected.get(property_id, []))


@dataclass
class TestRecord:
    """One suite test's outcome on one engine, with what it measured."""

    __test__ = False  # not a test class, whatever pytest imports it into

    name: str
    properties: tuple[str, ...]
    outcome: str = "pass"
    reason: str = ""
    duration_s: float = 0.0
    anomalies: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: the anomalies a known limitation of this engine run is expected to show, per property
    expected: dict[str, list[str]] = field(default_factory=dict)
    #: per property: the anomalies the test attributed to it (see ``judged``)
    verdicts: dict[str, dict[str, int]] = field(default_factory=dict)

    def worsen(self, outcome: str, reason: str) -> None:
        if RANK[outcome] >= RANK[self.outcome] or self.outcome == "pass":
            self.outcome, self.reason = outcome, reason or self.reason

    @property
    def judged(self) -> bool:
        return bool(self.verdicts)

    def outcome_for(self, property_id: str) -> tuple[str, str]:
        """This test's outcome and reason for one of its properties."""
        if not self.judged or self.outcome in UNTESTED or property_id not in self.verdicts:
            return self._plain(property_id)
        seen = self.verdicts[property_id]
        allowed = set(self.expected.get(property_id, []))
        counts = ", ".join(f"{k}={v}" for k, v in sorted(seen.items()))
        if any(k not in allowed for k in seen):
            return "fail", f"{self.name}: {property_id} anomalies {counts}" + (
                f" (expected only {expectation_text(self.expected, property_id)})"
                if allowed
                else ""
            )
        if seen:
            expected = expectation_text(self.expected, property_id)
            return "expected-fail", f"{self.name}: expected {expected}, saw {counts}"
        if self.outcome == "fail":  # the test failed on something other than its anomalies
            return self.outcome, f"{self.name}: {self.reason}"
        return "pass", self._held_note(property_id)

    def _plain(self, property_id: str) -> tuple[str, str]:
        if self.outcome == "pass":
            return "pass", self._held_note(property_id)
        return self.outcome, f"{self.name}: {self.reason}"

    def _held_note(self, property_id: str) -> str:
        if property_id in self.expected:
            expected = expectation_text(self.expected, property_id)
            return f"{self.name}: expected {expected}, but it held in this run"
        return ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "properties": list(self.properties),
            "outcome": self.outcome,
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
            "anomalies": self.anomalies,
            "timings": self.timings,
            "expected": self.expected,
            "verdicts": self.verdicts,
        }


def property_outcome(property_id: str, records: list[TestRecord]) -> tuple[str, str, list[str]]:
    """The outcome of one property from its tests, the reason shown for it, and the tests that
    did not run (with why)."""
    if not records:
        return "unknown", "no test of this property ran", []
    judged = [(r, *r.outcome_for(property_id)) for r in records]
    untested = [
        f"{r.name} ({outcome}: {r.reason})" for r, outcome, _ in judged if outcome in UNTESTED
    ]
    worst = max((o for _, o, _ in judged), key=RANK.__getitem__)
    passed = [(r, reason) for r, o, reason in judged if o == "pass"]
    if RANK[worst] > RANK["pass"]:
        deciding = [reason for _, o, reason in judged if o == worst]
        return worst, "; ".join(text[:500] for text in deciding[:3]), untested
    notes = "; ".join(reason for _, reason in passed if reason)
    if not passed:
        if all(o == "unsupported" for _, o, _ in judged):
            return "unsupported", judged[0][2], untested
        return "unknown", "none of its tests was selected: " + "; ".join(untested[:3]), untested
    summary = f"{len(passed)} passed" + (f" ({notes})" if notes else "")
    if untested:
        return "partial", f"{summary}; not tested: " + "; ".join(untested[:4]), untested
    return "pass", summary, untested
