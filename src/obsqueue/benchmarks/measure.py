"""What each ``measure`` of a workload file runs on one target, as one ``Outcome``.

* ``throughput``: one ``run_traffic`` in the workload's arrival mode;
* ``latency``: the closed-loop maximum of the shape, then open-loop runs at each fraction of it
  (``[latency] fractions``); the figures are those at ``report_fraction``, every rate a point.
  With ``p99_target_ms``, a bisection over the rate (``search_steps`` runs between 0 and the
  maximum) finds the highest offered rate whose end-to-end p99 holds the target
  (``rate_at_p99_target_per_s``; absent when even the lowest tried rate misses it);
* ``idle`` / ``recovery``: ``probes.py``;
* ``scaling``: one run per value of each sweep (sessions and consumers closed loop, depth
  preloaded), each a point.

The target is prepared (emptied) before every run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from obsqueue.benchmarks.probes import run_idle, run_recovery
from obsqueue.benchmarks.targets import WorkloadTarget
from obsqueue.benchmarks.traffic import Outcome, Tick, run_traffic
from obsqueue.benchmarks.workload import Workload

__all__ = ["RATIO_FIGURE", "measure"]

#: The figure a round's ratios are taken on, per measure (``None``: no ratio).
RATIO_FIGURE: dict[str, str | None] = {
    "throughput": "drained_per_s",
    "latency": "e2e_p50_ms",
    "idle": "wakeup_p50_ms",
    "recovery": "recovery_s",
    "scaling": None,
}
POINT_FIGURES = ("drained_per_s", "enqueue_per_s", "e2e_p50_ms", "e2e_p99_ms", "send_delay_p99_ms")


def measure(target: WorkloadTarget, workload: Workload, tick: Tick) -> Outcome:
    if workload.measure == "latency":
        return _latency(target, workload, tick)
    if workload.measure == "scaling":
        return _scaling(target, workload, tick)
    target.prepare()
    if workload.measure == "idle":
        return run_idle(target, workload, tick)
    if workload.measure == "recovery":
        return run_recovery(target, workload, tick)
    return run_traffic(target, workload, tick=tick)


def _point(sweep: str, value: float, target: WorkloadTarget, run: Outcome) -> dict[str, Any]:
    figures = {k: v for k, v in run.figures.items() if k in POINT_FIGURES}
    return {"sweep": sweep, "value": value, "target": target.name, **figures}


def _latency(target: WorkloadTarget, workload: Workload, tick: Tick) -> Outcome:
    target.prepare()
    closed = replace(workload, arrival=replace(workload.arrival, mode="closed"))
    peak = run_traffic(target, closed, tick=tick).figures.get("drained_per_s")
    if not peak:
        return Outcome(notes=["the closed-loop run drained nothing: no maximum to take rates of"])
    fractions = [float(f) for f in workload.latency.get("fractions", [0.5])]
    report = float(workload.latency.get("report_fraction", fractions[len(fractions) // 2]))
    outcome = Outcome()
    for fraction in sorted({*fractions, report}):
        target.prepare()
        run = run_traffic(target, workload, rate_per_s=peak * fraction, tick=tick)
        point = _point("offered_fraction", fraction, target, run)
        outcome.points.append(point | {"offered_per_s": round(peak * fraction, 1)})
        if fraction == report:
            outcome.figures, outcome.histograms = dict(run.figures), run.histograms
    outcome.figures["max_drained_per_s"] = peak
    outcome.figures["offered_per_s"] = round(peak * report, 1)
    if "p99_target_ms" in workload.latency:
        _search(target, workload, peak, outcome, tick)
    return outcome


def _search(
    target: WorkloadTarget, workload: Workload, peak: float, outcome: Outcome, tick: Tick
) -> None:
    """Bisect the offered rate for the highest one whose e2e p99 holds ``p99_target_ms``."""
    goal = float(workload.latency["p99_target_ms"])
    low, high, best = 0.0, 1.0, None
    for _ in range(int(workload.latency.get("search_steps", 4))):
        fraction = (low + high) / 2
        target.prepare()
        run = run_traffic(target, workload, rate_per_s=peak * fraction, tick=tick)
        p99 = run.figures.get("e2e_p99_ms")
        held = p99 is not None and p99 <= goal
        point = _point("search_fraction", fraction, target, run)
        outcome.points.append(point | {"offered_per_s": round(peak * fraction, 1)})
        if held:
            low, best = fraction, peak * fraction
        else:
            high = fraction
    if best is not None:
        outcome.figures["rate_at_p99_target_per_s"] = round(best, 1)


def _scaling(target: WorkloadTarget, workload: Workload, tick: Tick) -> Outcome:
    total = workload.total_messages
    closed = replace(workload, warmup_messages=0, arrival=replace(workload.arrival, mode="closed"))
    preload = replace(closed, arrival=replace(workload.arrival, mode="preload"))
    shapes: list[tuple[str, int, Workload]] = []
    for value in workload.scaling.get("sessions", []):
        shapes.append(
            (
                "sessions",
                value,
                replace(closed, sessions=value, messages_per_session=_per(total, value)),
            )
        )
    for value in workload.scaling.get("consumers", []):
        shapes.append(("consumers", value, replace(closed, consumers=value)))
    for value in workload.scaling.get("depth", []):
        per = _per(value, workload.sessions)
        shapes.append(("depth", value, replace(preload, messages_per_session=per)))
    outcome = Outcome()
    for sweep, value, shape in shapes:
        target.prepare()
        run = run_traffic(target, shape, tick=tick)
        outcome.points.append(_point(sweep, value, target, run))
    return outcome


def _per(total: int, sessions: int) -> int:
    return max(1, total // sessions)
