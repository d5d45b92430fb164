"""Rounds: every target measured once per round, in a rotated order, so they share the machine's
minutes; then each figure's median and spread over rounds, and ratios taken *within* a round.

A target whose run fails (a worker error, a death, a timeout) is marked failed in that round
with the reason; the others still run. ``ratio_to_ceiling`` divides a target's ratio figure (per
measure, ``measure.RATIO_FIGURE``) by the ceiling's of the same round; ``ratio_to_peers`` by each
peer's. Neither is computed across rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from obsqueue.benchmarks.measure import RATIO_FIGURE, measure
from obsqueue.benchmarks.procs import RunFailed
from obsqueue.benchmarks.targets import WorkloadTarget
from obsqueue.benchmarks.traffic import Outcome, Tick
from obsqueue.benchmarks.workload import Workload

__all__ = ["Entrant", "RoundsResult", "entrant", "run_rounds"]

#: Opens a live progress line: (description, messages) -> tick.
OpenLine = Callable[[str, int], Tick]


@dataclass(frozen=True)
class Entrant:
    """A target in the rounds: its name, kind, weaker guarantees and how to run it once."""

    name: str
    kind: str
    weaker: tuple[str, ...]
    run: Callable[[Workload, Tick], Outcome]


def entrant(target: WorkloadTarget, weaker: Sequence[str] | None = None) -> Entrant:
    shown = target.guarantees.weaker_than_obsqueue() if weaker is None else list(weaker)
    return Entrant(target.name, target.kind, tuple(shown), lambda w, tick: measure(target, w, tick))


@dataclass
class RoundsResult:
    rounds: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    histograms: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)

    def failure_of(self, name: str) -> str | None:
        """Why ``name`` failed in some round, or None."""
        for round_ in self.rounds:
            for entry in round_["targets"]:
                if entry["name"] == name and entry["status"] == "failed":
                    return f"round {round_['round']}: {entry['reason']}"
        return None


def run_rounds(
    entrants: Sequence[Entrant], workload: Workload, open_line: OpenLine
) -> RoundsResult:
    result = RoundsResult()
    for number in range(1, workload.rounds + 1):
        shift = (number - 1) % len(entrants)
        order = [*entrants[shift:], *entrants[:shift]]
        entries = []
        for one in order:
            tick = open_line(f"round {number}/{workload.rounds} {one.name}", 0)
            entries.append(_run_one(one, workload, tick, number, result))
        entries.sort(key=lambda e: [x.name for x in entrants].index(e["name"]))
        result.rounds.append({"round": number, "targets": entries})
    result.summary = summarize(entrants, result.rounds, RATIO_FIGURE.get(workload.measure))
    return result


def _run_one(
    one: Entrant, workload: Workload, tick: Tick, number: int, result: RoundsResult
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": one.name, "kind": one.kind, "status": "ok", "reason": None}
    if one.weaker:
        entry["weaker"] = list(one.weaker)
    started = time.monotonic()
    try:
        outcome = one.run(workload, tick)
    except (RunFailed, Exception) as exc:
        entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}", figures={})
        return entry
    entry["figures"] = outcome.figures
    entry["elapsed_s"] = round(time.monotonic() - started, 2)
    if outcome.notes:
        entry["notes"] = outcome.notes
    if outcome.histograms:
        result.histograms[one.name] = outcome.histograms
    result.points.extend(p | {"round": number} for p in outcome.points)
    return entry


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def summarize(
    entrants: Sequence[Entrant], rounds: list[dict[str, Any]], ratio_figure: str | None
) -> dict[str, dict[str, Any]]:
    """Per target: the median and spread of each figure over its ok rounds, and its ratios."""
    by_round = [{e["name"]: e for e in r["targets"] if e["status"] == "ok"} for r in rounds]
    ceiling = next((e.name for e in entrants if e.kind == "ceiling"), None)
    peers = [e.name for e in entrants if e.kind == "peer"]
    summary = {}
    for one in entrants:
        runs = [r[one.name]["figures"] for r in by_round if one.name in r]
        names = sorted({k for figures in runs for k in figures})
        values = {k: [f[k] for f in runs if k in f] for k in names}
        summary[one.name] = {
            "kind": one.kind,
            "weaker": list(one.weaker),
            "rounds_ok": len(runs),
            "figures": {k: round(statistics.median(v), 4) for k, v in values.items()},
            "spread": {k: [min(v), max(v)] for k, v in values.items()},
            "ratio_figure": ratio_figure,
            "ratio_to_ceiling": _ratio(by_round, one.name, ceiling, ratio_figure),
            "ratio_to_peers": {
                p: r
                for p in peers
                if p != one.name and (r := _ratio(by_round, one.name, p, ratio_figure))
            },
        }
    return summary


def _ratio(
    by_round: list[dict[str, Any]], name: str, other: str | None, figure: str | None
) -> dict[str, float] | None:
    if other is None or figure is None or other == name:
        return None
    ratios = []
    for entries in by_round:
        mine = entries.get(name, {}).get("figures", {}).get(figure)
        theirs = entries.get(other, {}).get("figures", {}).get(figure)
        if mine is not None and theirs:
            ratios.append(mine / theirs)
    return _spread(ratios) if ratios else None
