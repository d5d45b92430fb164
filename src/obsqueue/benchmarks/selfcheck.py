"""The harness checks itself (``obsqueue bench --self-check``), and writes ``bench-selfcheck.json``.

* **ceiling**: the null target (``null_target.py``) on the run's first workload must drain at
  least ``CEILING_FACTOR`` times as fast as the fastest engine result of that workload in the
  results directory — otherwise the figures measure the harness, not the engines;
* **delay**: the delay target with ``DELAY_MS`` injected must read ``DELAY_MS`` ± ``TOLERANCE_MS``
  at p50 end to end in the shipped ``latency`` workload (open loop, same profile), at its lowest
  offered fraction. The higher fractions are recorded beside it: they are fractions of the
  *harness's own* maximum, so they show how much queueing in the harness adds at that load.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from obsqueue.benchmarks.null_target import DelayTarget, NullTarget
from obsqueue.benchmarks.progress import LiveProgress
from obsqueue.benchmarks.rounds import entrant, run_rounds
from obsqueue.benchmarks.workload import Workload, load_workload
from obsqueue.results import ResultsFormatError, environment, read_results, write_results

__all__ = ["CEILING_FACTOR", "DELAY_MS", "TOLERANCE_MS", "fastest_engine", "run_self_checks"]

CEILING_FACTOR = 10.0
DELAY_MS = 10.0
TOLERANCE_MS = 1.0


def fastest_engine(results_dir: Path, workload: str) -> tuple[str, float] | None:
    """The engine with the highest median ``drained_per_s`` on ``workload`` in ``results_dir``."""
    best: tuple[str, float] | None = None
    for path in sorted(results_dir.glob(f"bench-*-{workload}.json")):
        try:
            doc = read_results(path, "benchmark")
        except ResultsFormatError:
            continue
        figure = doc.get("summary", {}).get("obsqueue", {}).get("figures", {}).get("drained_per_s")
        if doc.get("status") == "ok" and figure and (best is None or figure > best[1]):
            best = (doc["engine"], float(figure))
    return best


def check_ceiling(workload: Workload, results_dir: Path, live: LiveProgress) -> dict[str, Any]:
    live.prefix = f"self-check {workload.name}: "
    rounds = run_rounds([entrant(NullTarget("null"), [])], workload, live.line)
    null = rounds.summary["null"]["figures"].get("drained_per_s")
    fastest = fastest_engine(results_dir, workload.name)
    check: dict[str, Any] = {"workload": workload.name, "null_drained_per_s": null}
    if null is None:
        return check | {"passed": False, "reason": rounds.failure_of("null") or "no figure"}
    if fastest is None:
        reason = f"no ok engine result for {workload.name} in {results_dir} to compare with"
        return check | {"passed": False, "reason": reason}
    ratio = null / fastest[1]
    check |= {"fastest_engine": fastest[0], "fastest_drained_per_s": fastest[1]}
    check |= {"ratio": round(ratio, 2), "passed": ratio >= CEILING_FACTOR}
    check["reason"] = None if check["passed"] else f"null is only {ratio:.1f}x the fastest engine"
    return check


def check_delay(profile: str, live: LiveProgress) -> dict[str, Any]:
    workload = load_workload("latency", profile)
    live.prefix = "self-check latency: "
    target = DelayTarget("delay", options={"delay_ms": DELAY_MS})
    rounds = run_rounds([entrant(target, [])], workload, live.line)
    by_fraction: dict[float, list[float]] = {}
    for point in rounds.points:
        if point["sweep"] == "offered_fraction" and "e2e_p50_ms" in point:
            by_fraction.setdefault(point["value"], []).append(point["e2e_p50_ms"])
    lowest = min(by_fraction, default=None)
    p50 = None if lowest is None else statistics.median(by_fraction[lowest])
    check: dict[str, Any] = {"workload": "latency", "delay_ms": DELAY_MS, "e2e_p50_ms": p50}
    check["offered_fraction"] = lowest
    check["e2e_p50_ms_by_fraction"] = {str(k): v for k, v in sorted(by_fraction.items())}
    if p50 is None:
        return check | {"passed": False, "reason": rounds.failure_of("delay") or "no figure"}
    passed = abs(p50 - DELAY_MS) <= TOLERANCE_MS
    reason = None if passed else f"read {p50} ms, outside {DELAY_MS} ± {TOLERANCE_MS} ms"
    return check | {"passed": passed, "reason": reason}


def run_self_checks(workload: Workload, results_dir: Path, live: LiveProgress) -> bool:
    checks = {"ceiling": check_ceiling(workload, results_dir, live)}
    checks["delay"] = check_delay(workload.profile, live)
    body = {"checks": checks, "passed": all(c["passed"] for c in checks.values())}
    body["environment"] = environment()
    path = write_results(results_dir / "bench-selfcheck.json", "benchmark-selfcheck", body)
    live.log(f"self-check: {json.dumps(checks)} -> {path}")
    return bool(body["passed"])
