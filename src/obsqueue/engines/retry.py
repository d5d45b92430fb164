"""The retry-with-deadline policy every client-server engine follows.

One call to the backend may fail three ways, and each adapter's boundary (``redis/link.py``,
``postgres/pool.py``; Huey's and Dramatiq's adapters go through ``redis/link.py``) sorts the
driver's errors into them:

* **nothing ran** — connecting failed, or the server answered with an error that undid the
  command (PostgreSQL's SQLSTATE on an autocommitted statement; Redis still loading its data):
  safe to run again;
* **outcome unknown** — the command was sent and its reply was lost: safe to run again only when
  the call is ``repeatable`` (a read, a lease extension), never for a write;
* **refused** — bad credentials, or a server refusal (the refusal lists: ``REFUSALS`` in
  ``redis/link.py``; for PostgreSQL any other error the server sent back): never retried.

A call that may run again is retried with backoff (20 ms doubling up to 0.5 s) until its
deadline, ``connect_timeout_s`` from its start; then it raises ``EngineUnavailableError``, whose
hint says whether the outcome is unknown. No loop waits without a bound: optimistic
transactions (Redis ``WATCH``) get ``CONTENDED_ROUNDS`` tries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

__all__ = ["CONTENDED_ROUNDS", "Deadline", "outcome_hint"]

#: How many times an optimistic transaction is tried before the call gives up.
CONTENDED_ROUNDS: Final = 100

FIRST_DELAY_S: Final = 0.02
MAX_DELAY_S: Final = 0.5


class Deadline:
    """One call's retry budget: ``again(safe=...)`` after each failure says whether to retry."""

    def __init__(self, timeout_s: float, *, check_open: Callable[[], None]) -> None:
        self._deadline = time.monotonic() + timeout_s
        self._delay_s = FIRST_DELAY_S
        self._check_open = check_open

    def left_s(self) -> float:
        return self._deadline - time.monotonic()

    def again(self, *, safe: bool) -> bool:
        """After a failure: raise ``EngineClosedError`` if the engine was closed meanwhile (so
        the caller hears that, not "unavailable"); else, when running again is ``safe`` and the
        backoff fits before the deadline, sleep it and return True; otherwise False."""
        self._check_open()
        if not safe or self._delay_s > self.left_s():
            return False
        time.sleep(self._delay_s)
        self._delay_s = min(self._delay_s * 2, MAX_DELAY_S)
        return True


def outcome_hint(safe: bool) -> str:
    """What an ``EngineUnavailableError`` says about a call that was given up."""
    return "is the server running?" if safe else "the outcome is unknown"
