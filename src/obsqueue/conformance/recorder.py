"""What a suite test adds to its results: anomaly counts, timings, and its verdict per property
against the anomalies a known limitation of the engine run is expected to show."""

from __future__ import annotations

from typing import Any

import pytest

from obsqueue.conformance.collector import extra_key
from obsqueue.conformance.outcomes import expectation_text

__all__ = ["Recorder"]


class Recorder:
    """The results entry of one suite test (``obsqueue_record`` fixture)."""

    def __init__(self, item: pytest.Item) -> None:
        self._extra = item.stash.setdefault(
            extra_key, {"anomalies": {}, "timings": {}, "expected": {}, "verdicts": {}}
        )

    def anomalies(self, counts: dict[str, int]) -> None:
        self._extra["anomalies"].update({k: int(v) for k, v in counts.items() if v})

    def expect(self, anomalies: dict[str, list[str]], why: str) -> None:
        """A known limitation of this engine run: per property, the anomalies it may show."""
        self._extra["expected"].update(anomalies)
        self._extra["why_expected"] = why

    def judge(self, per_property: dict[str, dict[str, int]], detail: Any = None) -> None:
        """Attribute the anomalies seen to the properties whose guarantee they break, then:
        fail on any anomaly not expected; end as expected-fail (naming what was expected and
        what was seen) when every anomaly seen was expected; return when none was seen."""
        seen = {p: {k: int(v) for k, v in c.items() if v} for p, c in per_property.items()}
        self._extra["verdicts"].update(seen)
        for counts in seen.values():
            self.anomalies(counts)
        expected = self._extra["expected"]
        wrong = {
            p: {k: v for k, v in c.items() if k not in expected.get(p, [])} for p, c in seen.items()
        }
        wrong = {p: c for p, c in wrong.items() if c}
        if wrong:
            raise AssertionError(f"anomalies {wrong} (expected: {expected or 'none'}): {detail}")
        if any(seen.values()):
            named = "; ".join(
                f"{p}: expected {expectation_text(expected, p)}, saw "
                + ", ".join(f"{k}={v}" for k, v in c.items())
                for p, c in seen.items()
                if c
            )
            pytest.xfail(f"{named} ({self._extra.get('why_expected', 'known limitation')})")

    def timing(self, name: str, value: float) -> None:
        self._extra["timings"][name] = round(float(value), 6)
