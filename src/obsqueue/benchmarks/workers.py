"""The producer and consumer processes (started with ``spawn``; module-level functions).

Each opens the target itself, records into its own HdrHistograms and sends one report back on
the results queue: counts, encoded histograms, CPU seconds and peak RSS of its own process (and
of any children the target's consumer forked). Workers ignore SIGINT: on Ctrl-C the parent
stops and, if it must, kills them by pid.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from obsqueue.benchmarks.hist import new_histogram, record_ns
from obsqueue.benchmarks.loadgen import ProducerPlan, parse_stamp, stamp
from obsqueue.benchmarks.targets import WorkloadTarget

__all__ = ["ConsumerRole", "Shared", "consumer_main", "producer_main"]

#: Slots of ``Shared.marks``: when the killer consumer died; when the survivor got the message.
KILLED_AT, REDELIVERED_AT = 0, 1
#: Slots of ``Shared.flags``: consumers return; producers start; waiting consumers start.
STOP, GO, DRAIN = 0, 1, 2


@dataclass
class Shared:
    """The multiprocessing objects one run's workers share with the parent.

    Signals are plain shared flags, polled, not ``multiprocessing.Event``: a worker SIGKILLed
    while waiting on an Event's condition would leave ``set()`` blocked forever."""

    flags: Any  # RawArray('b'): STOP, GO, DRAIN
    counters: Any  # RawArray('q'): messages processed, one slot per consumer
    marks: Any  # RawArray('q'): recovery timestamps (ns)
    results: Any  # Queue: one report per worker

    def set(self, flag: int) -> None:
        self.flags[flag] = 1

    def is_set(self, flag: int) -> bool:
        return bool(self.flags[flag])

    def wait(self, flag: int, poll_s: float = 0.001) -> None:
        while not self.flags[flag]:
            time.sleep(poll_s)


@dataclass(frozen=True)
class ConsumerRole:
    index: int
    sessions: tuple[str, ...]
    kill_on_delivery: bool = False  # recovery: SIGKILL itself holding the first message
    wait_for_drain: bool = False  # preload and the recovery survivor: consume only on ``drain``
    mark_first: bool = False  # recovery: the survivor stamps the first message it processes


def _usage() -> tuple[float, float]:
    """(CPU seconds of this process and its waited-for children, peak RSS in MiB)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return cpu, max(me.ru_maxrss, kids.ru_maxrss) / 1024


def _report(shared: Shared, report: dict[str, Any]) -> None:
    cpu, rss = _usage()
    report["cpu_s"] = round(cpu - report.pop("cpu0"), 4)
    report["peak_rss_mib"] = round(rss, 2)
    shared.results.put(report)


def _failure(role: str, index: int) -> dict[str, Any]:
    lines = traceback.format_exc().strip().splitlines()
    return {"role": role, "index": index, "error": lines[-1] if lines else "unknown error"}


def _guarded(shared: Shared, role: str, index: int, body: Callable[[], dict[str, Any]]) -> None:
    """Run a worker's ``body`` and send its report, or its error if it raised."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        report = body()
    except BaseException:
        shared.results.put(_failure(role, index))
        return
    _report(shared, report)


def producer_main(target: WorkloadTarget, plan: ProducerPlan, shared: Shared) -> None:
    _guarded(shared, "producer", plan.index, lambda: _produce(target, plan, shared))


def consumer_main(target: WorkloadTarget, role: ConsumerRole, shared: Shared) -> None:
    _guarded(shared, "consumer", role.index, lambda: _consume(target, role, shared))


def _produce(target: WorkloadTarget, plan: ProducerPlan, shared: Shared) -> dict[str, Any]:
    session = target.open()
    report = {"role": "producer", "index": plan.index, "cpu0": _usage()[0]}
    enqueue, delay = new_histogram(), new_histogram()
    shared.results.put({"role": "ready", "index": plan.index})
    shared.wait(GO)
    start = first = time.monotonic_ns()
    for n, send in enumerate(plan.sends):
        key = f"toolu_p{plan.index}_{n}" if plan.unique_keys else None
        if send.offset_ns is None:
            intended = time.monotonic_ns()
        else:
            intended = start + send.offset_ns
            wait = intended - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
        actual = time.monotonic_ns()
        if send.warm:
            first = actual
        session.enqueue(send.session_id, stamp(intended, send.warm, send.size), key)
        if not send.warm:
            record_ns(enqueue, time.monotonic_ns() - intended)
            record_ns(delay, actual - intended)
        if plan.pause_ms:
            time.sleep(plan.pause_ms / 1000)
    report.update(
        sent=len(plan.sends),
        first_ns=first,
        last_ns=time.monotonic_ns(),
        enqueue=enqueue.encode(),
        send_delay=delay.encode(),
    )
    session.close()
    return report


def _consume(target: WorkloadTarget, role: ConsumerRole, shared: Shared) -> dict[str, Any]:
    session = target.open()
    report: dict[str, Any] = {"role": "consumer", "index": role.index, "cpu0": _usage()[0]}
    e2e, delivered = new_histogram(), new_histogram()
    lock = threading.Lock()
    span = {"first": 0, "last": 0, "measured": 0}

    def on_delivered(payload: str) -> None:
        now = time.monotonic_ns()
        intended, warm = parse_stamp(payload)
        if role.kill_on_delivery:
            shared.marks[KILLED_AT] = time.monotonic_ns()
            os.kill(os.getpid(), signal.SIGKILL)
        if not warm:
            with lock:
                record_ns(delivered, now - intended)

    def on_message(_session_id: str, payload: str) -> None:
        now = time.monotonic_ns()
        intended, warm = parse_stamp(payload)
        with lock:
            if role.mark_first and not shared.marks[REDELIVERED_AT]:
                shared.marks[REDELIVERED_AT] = now
            if not warm:
                record_ns(e2e, now - intended)
                span["first"] = span["first"] or now
                span["last"] = now
                span["measured"] += 1
            shared.counters[role.index] += 1

    session.on_delivered = on_delivered
    shared.results.put({"role": "ready", "index": role.index})
    if role.wait_for_drain:
        shared.wait(DRAIN)
    stop = threading.Event()
    threading.Thread(target=_relay, args=(shared, stop), daemon=True).start()
    session.consume(list(role.sessions), on_message, stop)
    report.update(
        processed=int(shared.counters[role.index]),
        measured=span["measured"],
        first_ns=span["first"],
        last_ns=span["last"],
        e2e=e2e.encode(),
        delivered=delivered.encode(),
    )
    session.close()
    return report


def _relay(shared: Shared, stop: threading.Event) -> None:
    """Set the in-process ``stop`` once the parent raises the STOP flag (or ``stop`` is set)."""
    while not shared.is_set(STOP) and not stop.wait(0.05):
        pass
    stop.set()
