"""One run's worker processes: started with ``spawn``, watched, and always gone at the end.

``WorkerGroup`` is a context manager. Leaving it — normally, on a timeout, on an exception or on
Ctrl-C — sets ``stop``, gives the workers a moment to return, then SIGKILLs whatever is left of
each worker *and its descendants* (a peer library's consumer may fork), by pid.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import time
from collections.abc import Callable
from typing import Any, Self

import psutil

from obsqueue.benchmarks.workers import DRAIN, GO, STOP, Shared

__all__ = ["RunFailed", "WorkerGroup"]

CTX = multiprocessing.get_context("spawn")


class RunFailed(Exception):
    """A run did not finish: a worker failed, died or the run timed out (the reason says which)."""


class WorkerGroup:
    def __init__(self, consumers: int, *, grace_s: float = 3.0) -> None:
        self.shared = Shared(
            flags=CTX.RawArray("b", 3),
            counters=CTX.RawArray("q", max(consumers, 1)),
            marks=CTX.RawArray("q", 4),
            results=CTX.Queue(),
        )
        self.processes: list[Any] = []
        self.may_die: set[int] = set()
        self.reports: list[dict[str, Any]] = []
        self.grace_s = grace_s

    def start(self, main: Callable[..., None], *args: Any, may_die: bool = False) -> Any:
        """Start ``main(*args, shared)`` in a new process; ``may_die``: it is meant to be killed."""
        process = CTX.Process(target=main, args=(*args, self.shared), daemon=True)
        process.start()
        self.processes.append(process)
        if may_die:
            self.may_die.add(id(process))
        return process

    def processed(self) -> int:
        return int(sum(self.shared.counters))

    def collect(self, role: str, count: int, deadline: float) -> list[dict[str, Any]]:
        """Wait for ``count`` reports of ``role`` (``ready``, ``producer``, ``consumer``);
        a worker's error or death, or the deadline, raises ``RunFailed``."""
        got = [r for r in self.reports if r["role"] == role]
        while len(got) < count:
            report = self._next(deadline, f"waiting for {count - len(got)} {role} report(s)")
            if report is not None and report["role"] == role:
                got.append(report)
        return got

    def wait_processed(self, total: int, deadline: float, tick: Callable[[int], None]) -> None:
        """Wait until the consumers have processed ``total`` messages."""
        while (done := self.processed()) < total:
            tick(done)
            self._next(min(deadline, time.monotonic() + 0.2), None)
            if time.monotonic() >= deadline:
                raise RunFailed(f"timed out: {done} of {total} messages processed")
        tick(total)

    def _next(self, deadline: float, waiting_for: str | None) -> dict[str, Any] | None:
        timeout = deadline - time.monotonic()
        try:
            report: dict[str, Any] = self.shared.results.get(timeout=max(0.01, timeout))
        except queue.Empty:
            self.check_alive()
            if waiting_for is not None and time.monotonic() >= deadline:
                raise RunFailed(f"timed out {waiting_for}") from None
            return None
        if "error" in report:
            raise RunFailed(f"{report['role']} {report['index']} failed: {report['error']}")
        self.reports.append(report)
        return report

    def check_alive(self) -> None:
        for process in self.processes:
            if process.exitcode not in (None, 0) and id(process) not in self.may_die:
                raise RunFailed(f"a worker process exited with code {process.exitcode}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for flag in (STOP, GO, DRAIN):
            self.shared.set(flag)
        end = time.monotonic() + (self.grace_s if exc_info[0] is None else 0.5)
        for process in self.processes:
            process.join(max(0.0, end - time.monotonic()))
        for process in self.processes:
            kill_tree(process.pid)
            process.join(5)
        self.shared.results.close()
        self.shared.results.cancel_join_thread()


def kill_tree(pid: int | None) -> None:
    """SIGKILL ``pid`` and every descendant of it that is still running."""
    if pid is None:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for proc in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
