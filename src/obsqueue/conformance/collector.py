"""Collect the suite's per-test outcomes during a pytest session; print the matrix, write JSON.

Results carry, beside the per-property outcomes (see :mod:`obsqueue.conformance.outcomes`):
the selection the run was made with (``-k``, ``-m``, ``--obsqueue-property``) and whether it was
complete; tests that errored before their engine could be opened; and ``crash_durability``,
which keeps "survives a process crash" (tested) apart from "survives an OS crash / power loss"
(never tested here: reported from the engine's declared capability and its live configuration).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from obsqueue.conformance.outcomes import TestRecord, property_outcome
from obsqueue.conformance.properties import PROPERTIES
from obsqueue.engines.base import Capability, ObservationQueueEngine
from obsqueue.errors import redact_url
from obsqueue.results import conformance_path, environment, write_results

__all__ = ["Collector", "EngineRun", "extra_key", "label_key", "record_key"]

record_key = pytest.StashKey["Collector"]()
label_key = pytest.StashKey[str]()
extra_key = pytest.StashKey[dict[str, Any]]()

SHORT = {
    "pass": "pass",
    "partial": "part",
    "fail": "FAIL",
    "unsupported": "unsup",
    "expected-fail": "xfail",
    "unknown": "unkn",
}
#: Outcomes whose reason the printed matrix spells out under the table.
EXPLAINED = ("fail", "unknown", "expected-fail", "partial")


@dataclass
class EngineRun:
    label: str
    url: str
    engine_class: str | None = None
    capabilities: list[str] = field(default_factory=list)
    describe: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] | None = None
    server_durability: str = "durable"
    tests: dict[str, TestRecord] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class Collector:
    """Collects per-test outcomes during a pytest session and writes results JSON at its end."""

    def __init__(self) -> None:
        self.runs: dict[str, EngineRun] = {}
        self.seed: int | None = None
        self.selection: dict[str, Any] = {}

    def run_for(self, label: str, url: str) -> EngineRun:
        """The run of ``label``, created bare if its engine has not been opened (yet)."""
        return self.runs.setdefault(label, EngineRun(label, redact_url(url)))

    def engine(
        self,
        label: str,
        spec: Any,
        cls: type[ObservationQueueEngine],
        server: Any,
        server_durability: str = "durable",
    ) -> EngineRun:
        run = self.run_for(label, spec.url)
        if run.engine_class is None:
            run.engine_class = f"{cls.__module__}.{cls.__qualname__}"
            run.capabilities = sorted(c.value for c in cls.capabilities)
            run.describe = _describe(spec)
            run.server = server.describe() if server is not None else None
            run.server_durability = server_durability
        return run

    def has_records(self) -> bool:
        return any(run.tests for run in self.runs.values())

    def record(
        self,
        item: pytest.Item,
        properties: tuple[str, ...],
        report: pytest.TestReport,
        fallback: tuple[str, str] | None,
    ) -> None:
        """Add one phase's report. ``fallback`` (label, url) names the engine of a test that
        failed before the engine was known; without either, the report has no engine to go to."""
        label = item.stash.get(label_key, None)
        if label is None and fallback is None:
            return
        run = self.runs[label] if label in self.runs else self.run_for(*fallback)  # type: ignore[misc]
        rec = run.tests.setdefault(item.name, TestRecord(item.name, tuple(properties)))
        rec.duration_s += report.duration
        extra = item.stash.get(extra_key, {})
        rec.anomalies.update(extra.get("anomalies", {}))
        rec.timings.update(extra.get("timings", {}))
        rec.expected.update(extra.get("expected", {}))
        rec.verdicts.update(extra.get("verdicts", {}))
        outcome, reason = _classify(report)
        if outcome is not None:
            rec.worsen(outcome, reason)

    def not_selected(self, name: str, properties: tuple[str, ...], label: str, url: str) -> None:
        why = self.selection.get("description", "deselected")
        run = self.run_for(label, url)
        run.tests[name] = TestRecord(name, properties, "not-selected", f"not selected ({why})")

    def property_results(self, run: EngineRun) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        for prop in PROPERTIES:
            records = [r for r in run.tests.values() if prop.id in r.properties]
            outcome, reason, untested = property_outcome(prop.id, records)
            anomalies: dict[str, int] = {}
            timings: dict[str, float] = {}
            expected: set[str] = set()
            for r in records:
                counts = r.verdicts.get(prop.id, r.anomalies) if r.judged else r.anomalies
                for key, count in counts.items():
                    anomalies[key] = anomalies.get(key, 0) + count
                timings.update({f"{r.name}.{k}": v for k, v in r.timings.items()})
                expected.update(r.expected.get(prop.id, []))
            results[prop.id] = {
                "id": prop.id,
                "title": prop.title,
                "capability": prop.capability.value,
                "outcome": outcome,
                "reason": reason,
                "anomalies": anomalies,
                "expected_anomalies": sorted(expected),
                "untested": untested,
                "timings": timings,
                "tests": [r.name for r in records if r.outcome != "not-selected"],
            }
        return results

    def matrix_lines(self) -> list[str]:
        ids = [p.id for p in PROPERTIES]
        width = max([len(label) for label in self.runs] + [6])
        lines = [f"{'engine':<{width}} " + " ".join(f"{i:>5}" for i in ids)]
        results = {label: self.property_results(run) for label, run in self.runs.items()}
        for label, props in results.items():
            cells = [SHORT[props[i]["outcome"]] for i in ids]
            lines.append(f"{label:<{width}} " + " ".join(f"{c:>5}" for c in cells))
        if self.selection:
            lines.append(f"  selection: {self.selection['description']} (results are partial)")
        for label, props in results.items():
            for pid, res in props.items():
                if res["outcome"] in EXPLAINED:
                    lines.append(f"  {label} {pid} {res['outcome']}: {res['reason'][:300]}")
            if props["P4"]["outcome"] in ("pass", "partial"):
                os_crash = crash_durability(self.runs[label], props)["os_crash"]
                lines.append(f"  {label} P4 covers process crashes; {os_crash['summary']}")
        return lines

    def write(self, directory: Path) -> list[Path]:
        paths = []
        for label, run in self.runs.items():
            props = self.property_results(run)
            body = {
                "engine": label,
                "url": run.url,
                "engine_class": run.engine_class,
                "capabilities": run.capabilities,
                "versions": run.describe,
                "server": run.server,
                "server_durability": run.server_durability,
                "environment": environment(),
                "seed": self.seed,
                "complete": not self.selection,
                "selection": self.selection or None,
                # time spent in this engine's tests (setup, call, teardown), and the wall time
                # from its first test to the end of the run (engines' tests interleave)
                "duration_s": round(sum(r.duration_s for r in run.tests.values()), 3),
                "span_s": round(time.monotonic() - run.started, 3),
                "crash_durability": crash_durability(run, props),
                "properties": list(props.values()),
                "tests": [r.to_json() for r in run.tests.values()],
            }
            paths.append(write_results(conformance_path(directory, label), "conformance", body))
        return paths


def crash_durability(run: EngineRun, props: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Process crash (tested by P4/P5) apart from OS crash / power loss (from configuration)."""
    configuration = run.describe.get("durability") if isinstance(run.describe, dict) else None
    declared = Capability.OS_CRASH_DURABLE.value in run.capabilities
    holds = configuration.get("survives_power_loss") if isinstance(configuration, dict) else None
    if not declared:
        summary = "OS crash / power loss: not declared"
    elif run.server_durability != "durable":
        summary = (
            f"OS crash / power loss: declared for the durable configuration, not in force "
            f"(server profile {run.server_durability!r})"
        )
    else:
        summary = "OS crash / power loss: declared, not tested here (from configuration"
        summary += f": survives_power_loss={holds})" if holds is not None else ")"
    return {
        "process_crash": {
            "capabilities": [
                Capability.DURABLE_ENQUEUE.value,
                Capability.SERVER_CRASH_DURABLE.value,
            ],
            "outcome": props["P4"]["outcome"],
            "tested": "SIGKILL of client processes; kill -9 and restart of the server",
        },
        "os_crash": {
            "capability": Capability.OS_CRASH_DURABLE.value,
            "declared": declared,
            "tested": False,
            "source": "configuration",
            "configuration": configuration,
            "survives_power_loss": holds,
            "summary": summary,
        },
    }


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
