"""Does an engine's matrix say what the engine declares? The check CI runs on every engine.

By default a property must be *pass* or *partial* when the engine declares its capability
(partial: only parts the engine's other capabilities rule out went untested) and *unsupported*
when it does not. An expectation replaces the default for one property: ``expected-fail`` with
the anomalies a known limitation may show (nothing else, and not a pass: a limitation that stops
showing is news too), or ``fail`` with a text its reason must contain (a known, reported defect).
``also_passes`` marks a defect the suite's random faults catch in some runs and not in others (a
pass is then accepted too, never any other outcome).

``shipped_engines()`` reads ``shipped_engines.toml``: the engines this project ships, with their
expectations — the one list CI, ``nox -s conformance`` and the scorecard run.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

__all__ = ["Expectation", "ShippedEngine", "mismatches", "shipped_engines"]


@dataclass(frozen=True)
class Expectation:
    outcome: str
    anomalies: tuple[str, ...] = ()
    reason: str = ""
    also_passes: bool = False


@dataclass(frozen=True)
class ShippedEngine:
    url: str
    weight: float = 1.0
    expect: dict[str, Expectation] = field(default_factory=dict)


def shipped_engines() -> list[ShippedEngine]:
    """The engines of ``shipped_engines.toml``, in file order."""
    text = resources.files("obsqueue.conformance").joinpath("shipped_engines.toml").read_text()
    return [_engine(entry) for entry in tomllib.loads(text)["engine"]]


def _engine(entry: dict[str, Any]) -> ShippedEngine:
    expect = {
        pid: Expectation(
            e["outcome"],
            tuple(e.get("anomalies", ())),
            e.get("reason", ""),
            bool(e.get("also_passes", False)),
        )
        for pid, e in entry.get("expect", {}).items()
    }
    for pid, e in expect.items():
        if e.outcome not in ("expected-fail", "fail"):
            raise ValueError(
                f"{entry['url']}: expect.{pid}.outcome: {e.outcome!r} is neither "
                "'expected-fail' nor 'fail'"
            )
    return ShippedEngine(entry["url"], float(entry.get("weight", 1)), expect)


def mismatches(doc: dict[str, Any], expect: dict[str, Expectation] | None = None) -> list[str]:
    """Where a conformance results document differs from what its engine declares."""
    expect = expect or {}
    label = doc.get("engine", "?")
    problems = [] if doc.get("complete", True) else [f"{label}: not a complete run"]
    declared = set(doc.get("capabilities", []))
    for prop in doc["properties"]:
        pid, outcome, reason = prop["id"], prop["outcome"], prop["reason"]
        wanted = expect.get(pid)
        if wanted is not None:
            problem = _against(prop, wanted)
        elif prop["capability"] in declared:
            problem = None if outcome in ("pass", "partial") else "pass or partial (declared)"
        else:
            problem = None if outcome == "unsupported" else "unsupported (not declared)"
        if problem:
            problems.append(f"{label} {pid}: {outcome}, expected {problem}: {reason[:400]}")
    return problems


def _against(prop: dict[str, Any], wanted: Expectation) -> str | None:
    if wanted.also_passes and prop["outcome"] == "pass":
        return None
    if prop["outcome"] != wanted.outcome:
        return wanted.outcome
    if wanted.outcome == "fail":
        return None if wanted.reason in prop["reason"] else f"fail with {wanted.reason!r}"
    seen = {k for k, v in prop.get("anomalies", {}).items() if v}
    if not seen or not seen <= set(wanted.anomalies):
        return f"expected-fail with only {list(wanted.anomalies)}, saw {sorted(seen)}"
    return None
