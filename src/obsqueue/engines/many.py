"""The many-session iterator's loop: one consumer serving a set of sessions (or every one).

``ObservationQueueEngine.create_multi_session_iterator`` checks its arguments and runs
:func:`iterate_many` on the engine's hooks (``_claim_heads``, ``_unclaim_heads``,
``_wakeup_mark_many``, ``_wait_for_any``: see ``engines/base.py``). Each round claims up to
``CLAIM_BATCH`` heads of distinct sessions, the set rotated by one session each round so that a
busy session does not starve the others; the heads are yielded one by one, any whose lease ran
out while it waited is dropped (it may be someone else's now), and those still held when the
iterator ends are given back.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from obsqueue.engines.options import positive_seconds
from obsqueue.engines.types import PendingMessageWithId, now_ms

if TYPE_CHECKING:
    from obsqueue.engines.base import ObservationQueueEngine

__all__ = ["IdleClock", "iterate_many"]


class IdleClock:
    """Both iterators' idle timeout: how long the next wait may last, and when it is over."""

    def __init__(
        self,
        idle_timeout: float | None,
        on_idle_timeout: Callable[[], None] | None,
        slice_s: float,
    ) -> None:
        if idle_timeout is not None:
            positive_seconds("idle_timeout", idle_timeout)
        self._timeout, self._on_idle, self._slice_s = idle_timeout, on_idle_timeout, slice_s
        self.restart()

    def restart(self) -> None:
        """The iteration began, or a message came: the idle time starts again."""
        timeout = self._timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def next_wait(self) -> float | None:
        """The next wait's length (a slice, so ``stop`` is seen), or None when the idle time is
        up — ``on_idle_timeout`` has then been called and the iterator ends."""
        if self._deadline is None:
            return self._slice_s
        left = self._deadline - time.monotonic()
        if left > 0:
            return min(self._slice_s, left)
        if self._on_idle is not None:
            self._on_idle()
        return None


def iterate_many(
    engine: ObservationQueueEngine,
    sids: tuple[str, ...] | None,
    stop: threading.Event | None,
    idle: IdleClock,
    lease_s: float,
    consumer_id: str,
) -> Iterator[PendingMessageWithId]:
    """Yield the heads of ``sids`` (None: every session) as they become ready, until ``stop``
    or the idle timeout; arguments already checked."""
    ready: deque[PendingMessageWithId] = deque()
    turn = 0
    idle.restart()
    try:
        while not (stop is not None and stop.is_set()):
            engine._check_open()
            claimed, mark = False, None
            if not ready:
                claimed, mark = True, engine._wakeup_mark_many(sids)
                order = None if sids is None else sids[turn:] + sids[:turn]
                turn = 0 if sids is None else (turn + 1) % len(sids)
                ready.extend(engine._claim_heads(order, consumer_id, lease_s, engine.CLAIM_BATCH))
            msg = _next_unexpired(ready)
            if msg is not None:
                yield msg
                idle.restart()
                continue
            if not claimed:
                continue  # what was ready had expired: claim again before waiting
            wait_s = idle.next_wait()
            if wait_s is None:
                return
            engine._wait_for_any(sids, wait_s, mark)
    finally:
        if ready and not engine.closed:
            engine._unclaim_heads(list(ready))


def _next_unexpired(ready: deque[PendingMessageWithId]) -> PendingMessageWithId | None:
    """The first held head whose lease has not run out; expired ones are dropped (they may be
    someone else's now, and come back by stall recovery if not)."""
    now = now_ms()
    while ready:
        msg = ready.popleft()
        if msg.claim is None or msg.claim.lease_expires_at_ms > now:
            return msg
    return None
