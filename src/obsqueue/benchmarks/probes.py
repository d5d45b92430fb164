"""The ``idle`` and ``recovery`` workloads: one message at a time, timed from outside.

``idle``: one consumer process blocks on an empty session; after each gap the harness process
(the producer) sends one message and times it until the consumer has acknowledged it
(``wakeup_*``); meanwhile it reads the blocked consumer's CPU time and RSS (``idle_cpu_pct``,
``idle_rss_mib``).

``recovery``: a consumer process SIGKILLs itself when a message is delivered to it, before the
ack; a second consumer process, already open, then consumes the session and the time from the
kill to its processing of the message is ``recovery_s``. A target that does not report
deliveries cannot be killed holding a message, and one that drops a killed consumer's task never
redelivers it: each says so in the notes, with no figure.
"""

from __future__ import annotations

import statistics
import time

import psutil

from obsqueue.benchmarks.hist import Histogram, new_histogram, percentile_figures, record_ns
from obsqueue.benchmarks.loadgen import draw_size, stamp
from obsqueue.benchmarks.procs import RunFailed, WorkerGroup
from obsqueue.benchmarks.targets import TargetSession, WorkloadTarget
from obsqueue.benchmarks.traffic import Outcome, Tick
from obsqueue.benchmarks.workers import (
    DRAIN,
    KILLED_AT,
    REDELIVERED_AT,
    ConsumerRole,
    consumer_main,
)
from obsqueue.benchmarks.workload import Workload

__all__ = ["run_idle", "run_recovery"]

POLL_S = 0.0002


def _payload(workload: Workload) -> str:
    import random

    return stamp(time.monotonic_ns(), False, draw_size(workload.payload, random.Random(1)))


def run_idle(
    target: WorkloadTarget, workload: Workload, tick: Tick = lambda _d, _t: None
) -> Outcome:
    gaps = [float(g) for g in workload.idle.get("gaps_s", [1.0])]
    samples = int(workload.idle.get("samples", 3))
    deadline = time.monotonic() + workload.timeout_s
    outcome, overall = Outcome(), new_histogram()
    cpu_s = idle_s = 0.0
    rss = 0
    with WorkerGroup(1) as group:
        process = group.start(consumer_main, target, ConsumerRole(0, ("s00000",)))
        group.collect("ready", 1, deadline)
        watched, session = psutil.Process(process.pid), target.open()
        try:
            time.sleep(0.5)  # let the consumer block
            for gap in gaps:
                hist = new_histogram()
                for _ in range(samples):
                    before, start = sum(watched.cpu_times()[:2]), time.monotonic()
                    time.sleep(gap)
                    cpu_s += sum(watched.cpu_times()[:2]) - before
                    idle_s += time.monotonic() - start
                    rss = max(rss, watched.memory_info().rss)
                    elapsed = _send_and_wait(group, session, workload, deadline)
                    record_ns(hist, elapsed)
                    record_ns(overall, elapsed)
                    tick(int(overall.get_total_count()), len(gaps) * samples)
                point = {"sweep": "idle_gap_s", "value": gap, "target": target.name}
                outcome.points.append(point | _wakeup(hist))
        finally:
            session.close()
    outcome.figures = _wakeup(overall)
    outcome.figures["idle_cpu_pct"] = round(100 * cpu_s / idle_s, 3)
    outcome.figures["idle_rss_mib"] = round(rss / 2**20, 2)
    return outcome


def _wakeup(hist: Histogram) -> dict[str, float]:
    figures = percentile_figures(hist, "wakeup")
    return {k: v for k, v in figures.items() if k in ("wakeup_p50_ms", "wakeup_p99_ms")}


def _send_and_wait(
    group: WorkerGroup, session: TargetSession, workload: Workload, deadline: float
) -> int:
    done = group.processed()
    start = time.monotonic_ns()
    session.enqueue("s00000", _payload(workload))
    while group.processed() == done:
        if time.monotonic() > deadline:
            raise RunFailed("timed out waiting for the consumer to wake up")
        group.check_alive()
        time.sleep(POLL_S)
    return time.monotonic_ns() - start


def run_recovery(
    target: WorkloadTarget, workload: Workload, tick: Tick = lambda _d, _t: None
) -> Outcome:
    samples = int(workload.recovery.get("samples", 3))
    wait_s = 3 * float(workload.recovery.get("lease_s", 30.0)) + 10
    outcome, times = Outcome(), []
    session = target.open()
    try:
        for k in range(samples):
            got = _one_recovery(target, session, workload, f"r{k:03d}", wait_s)
            if isinstance(got, str):
                outcome.notes.append(got)
                break
            times.append(got)
            outcome.points.append(
                {"sweep": "recovery_sample", "value": k + 1, "target": target.name}
                | {"recovery_s": round(got, 3)}
            )
            tick(k + 1, samples)
    finally:
        session.close()
    if times:
        outcome.figures["recovery_s"] = round(statistics.median(times), 3)
    return outcome


def _one_recovery(
    target: WorkloadTarget, session: TargetSession, workload: Workload, sid: str, wait_s: float
) -> float | str:
    deadline = time.monotonic() + workload.timeout_s
    with WorkerGroup(2) as group:
        killer = group.start(
            consumer_main, target, ConsumerRole(0, (sid,), kill_on_delivery=True), may_die=True
        )
        group.start(
            consumer_main, target, ConsumerRole(1, (sid,), wait_for_drain=True, mark_first=True)
        )
        group.collect("ready", 2, deadline)
        session.enqueue(sid, _payload(workload))
        while killer.exitcode is None and group.processed() == 0:
            if time.monotonic() > deadline:
                raise RunFailed("timed out waiting for the first delivery")
            time.sleep(0.005)
        if group.processed() > 0:
            return "the target does not report deliveries: no consumer can be killed holding one"
        group.shared.set(DRAIN)
        end = time.monotonic() + wait_s
        while not group.shared.marks[REDELIVERED_AT]:
            if time.monotonic() > end:
                lost = target.guarantees.survives_consumer_kill is False
                declared = ", as the target declares (task lost on a consumer kill)" if lost else ""
                return f"not redelivered within {wait_s:.0f} s of the consumer's SIGKILL{declared}"
            group.check_alive()
            time.sleep(0.005)
        return float(group.shared.marks[REDELIVERED_AT] - group.shared.marks[KILLED_AT]) / 1e9
