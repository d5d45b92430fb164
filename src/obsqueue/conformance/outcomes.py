"""Turn pytest reports into the five outcomes per property and engine, and export them.

Per test: pass, fail, unsupported (skipped with ``unsupported: …``), expected-fail (xfail), or
unknown (skipped with ``unknown: …``, or any other skip). Per property, the worst news wins:
fail > expected-fail > unknown > pass > unsupported, so one failing guarantee fails the property
and a property is *unsupported* only when every one of its tests was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from obsqueue.conformance.properties import PROPERTIES
from obsqueue.engines.base import ObservationQueueEngine
from obsqueue.errors import redact_url
from obsqueue.results import conformance_path, environment, write_results

__all__ = [
    "Collector",
    "EngineRun",
    "TestRecord",
    "extra_key",
    "label_key",
    "record_key",
    "property_outcome",
]

record_key = pytest.StashKey["Collector"]()
label_key = pytest.StashKey[str]()
extra_key = pytest.StashKey[dict[str, Any]]()

_RANK = {"fail": 4, "expected-fail": 3, "unknown": 2, "pass": 1, "unsupported": 0}


@dataclass
class TestRecord:
    name: str
    properties: tuple[str, ...]
    outcome: str = "pass"
    reason: str = ""
    duration_s: float = 0.0
    anomalies: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def worsen(self, outcome: str, reason: str) -> None:
        if _RANK[outcome] >= _RANK[self.outcome] or self.outcome == "pass":
            self.outcome, self.reason = outcome, reason or self.reason


@dataclass
class EngineRun:
    label: str
    url: str
    engine_class: str
    capabilities: list[str]
    describe: dict[str, Any]
    server: dict[str, Any] | None
    tests: dict[str, TestRecord] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


def property_outcome(records: list[TestRecord]) -> tuple[str, str]:
    """The outcome of one property from its tests' outcomes, and the reason shown for it."""
    if not records:
        return "unknown", "no test of this property ran"
    worst = max(records, key=lambda r: _RANK[r.outcome]).outcome
    if worst == "pass":
        partial = [r for r in records if r.outcome == "unsupported"]
        note = "; ".join(f"{r.name}: {r.reason}" for r in partial[:3])
        return "pass", f"{sum(r.outcome == 'pass' for r in records)} passed" + (
            f" ({len(partial)} not applicable: {note})" if partial else ""
        )
    deciding = [r for r in records if r.outcome == worst]
    return worst, "; ".join(f"{r.name}: {r.reason}"[:500] for r in deciding[:3])


class Collector:
    """Collects per-test outcomes during a pytest session and writes results JSON at its end."""

    def __init__(self) -> None:
        self.runs: dict[str, EngineRun] = {}
        self.seed: int | None = None

    def engine(
        self, label: str, spec: Any, cls: type[ObservationQueueEngine], server: Any
    ) -> EngineRun:
        if label not in self.runs:
            self.runs[label] = EngineRun(
                label=label,
                url=redact_url(spec.url),
                engine_class=f"{cls.__module__}.{cls.__qualname__}",
                capabilities=sorted(c.value for c in cls.capabilities),
                describe=_describe(spec),
                server=server.describe() if server is not None else None,
            )
        return self.runs[label]

    def has_records(self) -> bool:
        return any(run.tests for run in self.runs.values())

    def record(
        self, item: pytest.Item, properties: tuple[str, ...], report: pytest.TestReport
    ) -> None:
        label = item.stash.get(label_key, None)
        if label is None or label not in self.runs:
            return
        run = self.runs[label]
        name = item.name
        rec = run.tests.setdefault(name, TestRecord(name, tuple(properties)))
        rec.duration_s += report.duration
        extra = item.stash.get(extra_key, {})
        rec.anomalies.update(extra.get("anomalies", {}))
        rec.timings.update(extra.get("timings", {}))
        outcome, reason = _classify(report)
        if outcome is not None:
            rec.worsen(outcome, reason)

    def matrix_lines(self) -> list[str]:
        ids = [p.id for p in PROPERTIES]
        width = max([len(label) for label in self.runs] + [6])
        lines = [f"{'engine':<{width}} " + " ".join(f"{i:>5}" for i in ids)]
        short = {
            "pass": "pass",
            "fail": "FAIL",
            "unsupported": "unsup",
            "expected-fail": "xfail",
            "unknown": "unkn",
        }
        for label, run in self.runs.items():
            cells = [short[self.property_results(run)[i]["outcome"]] for i in ids]
            lines.append(f"{label:<{width}} " + " ".join(f"{c:>5}" for c in cells))
        for label, run in self.runs.items():
            for pid, res in self.property_results(run).items():
                if res["outcome"] in ("fail", "unknown", "expected-fail"):
                    lines.append(f"  {label} {pid} {res['outcome']}: {res['reason'][:300]}")
        return lines

    def property_results(self, run: EngineRun) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        for prop in PROPERTIES:
            records = [r for r in run.tests.values() if prop.id in r.properties]
            outcome, reason = property_outcome(records)
            anomalies: dict[str, int] = {}
            timings: dict[str, float] = {}
            for r in records:
                for key, count in r.anomalies.items():
                    anomalies[key] = anomalies.get(key, 0) + count
                timings.update({f"{r.name}.{k}": v for k, v in r.timings.items()})
            results[prop.id] = {
                "id": prop.id,
                "title": prop.title,
                "capability": prop.capability.value,
                "outcome": outcome,
                "reason": reason,
                "anomalies": anomalies,
                "timings": timings,
                "tests": [r.name for r in records],
            }
        return results

    def write(self, directory: Path) -> list[Path]:
        paths = []
        for label, run in self.runs.items():
            body = {
                "engine": label,
                "url": run.url,
                "engine_class": run.engine_class,
                "capabilities": run.capabilities,
                "versions": run.describe,
                "server": run.server,
                "environment": environment(),
                "seed": self.seed,
                # time spent in this engine's tests (setup, call, teardown), and the wall time
                # from its first test to the end of the run (engines' tests interleave)
                "duration_s": round(sum(r.duration_s for r in run.tests.values()), 3),
                "span_s": round(time.monotonic() - run.started, 3),
                "properties": list(self.property_results(run).values()),
                "tests": [vars(r) for r in run.tests.values()],
            }
            paths.append(write_results(conformance_path(directory, label), "conformance", body))
        return paths


def _describe(spec: Any) -> dict[str, Any]:
    try:
        engine = spec.open()
    except Exception as exc:  # the engine's own tests will report the failure
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        described: dict[str, Any] = engine.describe()
        return described
    finally:
        engine.close()


def _classify(report: pytest.TestReport) -> tuple[str | None, str]:
    if hasattr(report, "wasxfail"):
        if report.skipped:
            return "expected-fail", str(report.wasxfail)
        if report.passed and report.when == "call":
            return "pass", f"expected to fail ({report.wasxfail}) but held in this run"
    if report.skipped:
        reason = _skip_reason(report)
        for prefix in ("unsupported", "unknown"):
            if reason.startswith(f"{prefix}:"):
                return prefix, reason[len(prefix) + 1 :].strip()
        return "unknown", reason
    if report.failed:
        return "fail", _failure_reason(report)
    return ("pass", "") if report.when == "call" else (None, "")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def _failure_reason(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None) or str(report.longrepr)
    return f"{report.when}: {message}".strip()[:1500]
