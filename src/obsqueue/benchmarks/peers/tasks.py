"""The task functions the peer libraries' workers import by dotted path (RQ jobs, Dramatiq
actors, Huey and procrastinate tasks name one of these, as their users' code names its own).

The work itself is nothing but a sleep of ``WORK["s"]`` seconds (0 unless a consumer sets it
from its target's ``options["work_s"]``; RQ's work horses inherit it through ``fork``): the
harness measures the queue, and a test uses the sleep to kill a consumer mid-task. The harness's
``on_message`` is called after each library has acknowledged the task in its own way (see
each peer's module)."""

from __future__ import annotations

import time

__all__ = ["WORK", "record", "work"]

#: Seconds each task sleeps in this process.
WORK = {"s": 0.0}


def work() -> None:
    """The work of one message: sleep ``WORK["s"]``."""
    if WORK["s"] > 0:
        time.sleep(WORK["s"])


def record(session_id: str, payload: str) -> None:
    """One message of ``session_id``: the work; returning None stores no result."""
    del session_id, payload
    work()
