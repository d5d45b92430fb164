"""Wakeup for ``postgresql://``: a LISTEN thread and the bookkeeping of the waiting iterators.

Enqueues (and resets) send ``pg_notify('obsq_<namespace>', session_id)`` in their own statement,
so the notification is delivered on commit. One ``NotifyWakeup`` per engine keeps a counter per
watched session and an epoch for everyone: a waiter's mark is ``(epoch, its session's count)``
taken before its claim attempt, and its wait ends once that pair changed (or after the
iterator's 0.2 s slice, the fallback). ``wake_session`` bumps one watched session's count (an
enqueue through this engine object, a NOTIFY, a head prefetched for an iterator); ``wake_all``
bumps the epoch (the listener (re)connected, the engine closes). Past 10,000 watched sessions
the counts are dropped and the epoch bumped, so the table stays bounded.

A many-session waiter (``mark_many`` / ``wait_many``, for a set of sessions or all of them)
does not watch sessions one by one: its mark is ``(epoch, how many wakes so far)``, and the
sessions of the last 4,096 wakes are kept, so its wait looks only at the sessions woken since
its mark (any of them, for "all"; one of its set, else). Mark and wait cost the same for 1,000
sessions as for one, and the one namespace channel keeps a single ``LISTEN`` per engine; a
channel per session would need a ``LISTEN`` per session of the set on the listener connection
and a notification per channel from each enqueue. A waiter whose mark is more than 4,096 wakes
old returns at once (it cannot tell whether its sessions were among them).

The listener thread is started by the first mark, which waits for it to ``LISTEN`` (at most
``min(2 s, connect_timeout_s)``) so a consumer's first wait already hears enqueues. It holds a
dedicated connection of its own, outside the pool; after each (re)connect it wakes every waiter
for whatever it missed meanwhile, and a lost connection is retried with backoff from 50 ms up to
1 s. ``stop`` ends it with an empty NOTIFY sent through the engine's pool.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

__all__ = ["NotifyWakeup"]

_MAX_WATCHED_SESSIONS = 10_000
#: How many of the latest woken sessions a many-session waiter can look back over.
_RECENT = 4096


class NotifyWakeup:
    """The waiters of one engine and the listener that wakes them; see the module docstring."""

    def __init__(
        self, *, url: str, connect_kwargs: dict[str, Any], channel: str, connect_timeout_s: float
    ) -> None:
        self._url, self._connect_kwargs, self._channel = url, connect_kwargs, channel
        self._connect_timeout_s = connect_timeout_s
        self._wake = threading.Condition()
        self._wake_seq: dict[str, int] = {}
        self._wake_epoch = 0
        self._heard = 0  # wake_session calls so far; the last _RECENT of their sessions:
        self._recent: deque[str] = deque(maxlen=_RECENT)
        self._many_waiting = 0  # waiters in wait_many: they hear every session
        self._start_lock = threading.Lock()
        self._listener: _Listener | None = None

    def wake_session(self, session_id: str) -> None:
        with self._wake:
            self._heard += 1
            self._recent.append(session_id)
            if session_id in self._wake_seq:
                self._wake_seq[session_id] += 1
                self._wake.notify_all()
            elif self._many_waiting:
                self._wake.notify_all()

    def wake_all(self) -> None:
        with self._wake:
            self._wake_epoch += 1
            self._wake.notify_all()

    def mark(self, session_id: str) -> object:
        """A token taken before a claim attempt; ``wait`` returns once it changes."""
        self._ensure_listener()
        with self._wake:
            if len(self._wake_seq) > _MAX_WATCHED_SESSIONS:
                self._wake_seq.clear()
                self._wake_epoch += 1
            return (self._wake_epoch, self._wake_seq.setdefault(session_id, 0))

    def wait(self, session_id: str, timeout_s: float, mark: object) -> None:
        with self._wake:
            self._wake.wait_for(
                lambda: (self._wake_epoch, self._wake_seq.get(session_id, 0)) != mark, timeout_s
            )

    def mark_many(self) -> object:
        """A token taken before a claim round over a set of sessions (or all); ``wait_many``
        returns once a session of the set was woken after it. O(1), whatever the set's size."""
        self._ensure_listener()
        with self._wake:
            return (self._wake_epoch, self._heard)

    def wait_many(self, sids: tuple[str, ...] | None, timeout_s: float, mark: object) -> None:
        """Wait until a session of ``sids`` (None: any session) was woken after ``mark``, the
        epoch moved, or ``timeout_s`` passed. Only the sessions woken since the mark are looked
        at; if more than ``_RECENT`` were, it returns at once (it cannot tell, so it wakes)."""
        assert isinstance(mark, tuple)
        epoch: int = mark[0]
        heard: int = mark[1]
        wanted = None if sids is None else frozenset(sids)
        looked = [heard]  # wakes up to this one were looked at already (none of the set)

        def woken() -> bool:
            if self._wake_epoch != epoch:
                return True
            new, unseen = self._heard - heard, self._heard - looked[0]
            if new == 0 or wanted is None or new > len(self._recent):
                return new != 0
            looked[0] = self._heard
            return any(self._recent[-i] in wanted for i in range(1, unseen + 1))

        with self._wake:
            self._many_waiting += 1
            try:
                self._wake.wait_for(woken, timeout_s)
            finally:
                self._many_waiting -= 1

    def stop(self, pool: ConnectionPool[Any]) -> None:
        """Stop the listener, if it was started (an empty NOTIFY through ``pool`` ends its wait
        at once), then wake every waiter."""
        listener = self._listener
        if listener is not None:
            listener.stop_listening()
            with (
                contextlib.suppress(psycopg.Error, PoolTimeout, PoolClosed),
                pool.connection(timeout=0.5) as conn,
            ):
                conn.execute("SELECT pg_notify(%s, '')", [self._channel])
            listener.join(timeout=2.0)
        self.wake_all()

    def _ensure_listener(self) -> None:
        """Start the listener on first use and wait (briefly) until it LISTENs, so a consumer's
        first wait already hears enqueues; later, a listener that reconnects is not waited for."""
        if self._listener is not None:
            return
        with self._start_lock:
            listener, started = self._listener, False
            if listener is None:
                kwargs = {**self._connect_kwargs, "application_name": "obsqueue listener"}
                listener = self._listener = _Listener(self._url, kwargs, self._channel, self)
                listener.start()
                started = True
        if started:
            listener.ready.wait(min(2.0, self._connect_timeout_s))


class _Listener(threading.Thread):
    """One dedicated connection that LISTENs on the namespace's channel and wakes waiters."""

    def __init__(self, url: str, kwargs: dict[str, Any], channel: str, waiters: NotifyWakeup):
        super().__init__(name=f"obsqueue-listen-{channel}", daemon=True)
        self._url, self._kwargs, self._channel, self._waiters = url, kwargs, channel, waiters
        self._stop_event = threading.Event()
        self.ready = threading.Event()

    def stop_listening(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        delay_s = 0.05
        while not self._stop_event.is_set():
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(self._url, **self._kwargs) as conn,
            ):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                self.ready.set()
                self._waiters.wake_all()  # anything missed while not listening
                delay_s = 0.05
                self._relay(conn)
            self.ready.clear()
            self._stop_event.wait(delay_s)
            delay_s = min(delay_s * 2, 1.0)

    def _relay(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop_event.is_set():
            for notify in conn.notifies(timeout=1.0):
                if notify.payload:
                    self._waiters.wake_session(notify.payload)
                if self._stop_event.is_set():
                    break
