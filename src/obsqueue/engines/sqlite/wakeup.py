"""Cross-process wakeup for ``sqlite://``: a watcher thread that notices commits to the file.

``PRAGMA data_version`` read on a connection changes whenever *another* connection committed to
the database, from any process. One ``ChangeWatcher`` per engine reads it on a dedicated
connection that never writes, while at least one iterator waits, and bumps ``seq`` (notifying the
engine's wakeup condition) when it changed. With nobody waiting the thread blocks on the
condition and costs nothing.

When it reads the version is decided by the mode:

* ``inotify`` (Linux, the default where it can be set up): the thread blocks on an inotify
  descriptor watching the ``-wal`` file for writes — every commit in WAL mode appends frames to
  it — so an idle consumer uses no CPU. A write becomes visible only after the writer's fsync and
  wal-index update, so after each write event the version is polled every millisecond for up to
  ``HOT_WINDOW_S`` until it changes. The version is also read once a second regardless.
* ``poll`` (elsewhere, or asked for): the version is read every ``interval_s``.

In both modes waiters are woken at most once per ``interval_s``: every commit to the file wakes
every waiter of the engine, which then re-reads its own head, so on a busy file the cost stays
bounded by (waiters / interval) cheap reads per second rather than growing with the commit rate.

Either way a waiter also wakes every ``WAIT_SLICE_S`` (0.2 s) of the iterator and re-reads its
head, so a missed wakeup costs at most that. The first version is read before the thread starts,
during the waiter's ``_wakeup_mark`` — before its claim attempt — so no commit after a mark can
go unnoticed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["HOT_WINDOW_S", "ChangeWatcher"]

HOT_INTERVAL_S: Final = 0.001
HOT_WINDOW_S: Final = 0.05
INOTIFY_CHECK_MS: Final = 1000
_IN_MODIFY: Final = 0x2
_IN_IGNORED: Final = 0x8000
_EVENT: Final = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (+ name)


class _Inotify:
    """A non-blocking inotify descriptor watching one file for writes (Linux, via libc)."""

    def __init__(self, path: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if int(libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY)) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch({path}) failed")
        self.fd = fd

    def drain(self) -> bool:
        """Read every queued event; False once the watch is gone (the file was deleted)."""
        alive = True
        while True:
            try:
                data = os.read(self.fd, 16384)
            except BlockingIOError:
                return alive
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, name_len = _EVENT.unpack_from(data, offset)
                alive = alive and not mask & _IN_IGNORED
                offset += _EVENT.size + name_len

    def close(self) -> None:
        os.close(self.fd)


def _open_inotify(path: str) -> _Inotify | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _Inotify(path)
    except (OSError, AttributeError):  # no libc symbol, too many instances or watches
        return None


class ChangeWatcher:
    """Notices commits by other connections to one SQLite file; see the module docstring."""

    def __init__(
        self,
        *,
        connect: Callable[[], sqlite3.Connection],
        version_sql: str,
        cond: threading.Condition,
        interval_s: float,
        wal_path: str,
        use_inotify: bool,
    ) -> None:
        self._connect = connect
        self._version_sql = version_sql
        self._cond = cond
        self._interval_s = interval_s
        self._wal_path = wal_path
        self._use_inotify = use_inotify
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._inotify: _Inotify | None = None
        self._pipe: tuple[int, int] | None = None
        self.seq = 0
        self.waiters = 0
        self.mode = "inotify" if use_inotify else "poll"

    def start(self) -> None:
        """Start the thread unless it runs; raises ``sqlite3.Error`` if the file cannot be read."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._start_lock:
            if self._stopping.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            conn = self._connect()
            try:
                version = self._version(conn)  # also creates the -wal file if it was missing
            except BaseException:
                conn.close()
                raise
            if self._pipe is None:
                self._pipe = os.pipe()
            self._inotify = _open_inotify(self._wal_path) if self._use_inotify else None
            self.mode = "poll" if self._inotify is None else "inotify"
            self._thread = threading.Thread(
                target=self._loop, args=(conn, version), name="obsqueue-sqlite-watcher", daemon=True
            )
            self._thread.start()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Block until ``predicate()`` holds (checked on every wakeup) or ``timeout_s`` passed."""
        with self._cond:
            self.waiters += 1
            if self.waiters == 1:
                self._cond.notify_all()  # rouse the thread, idle while nobody waited
            try:
                self._cond.wait_for(predicate, timeout_s)
            finally:
                self.waiters -= 1

    def stop(self) -> None:
        with self._start_lock:
            self._stopping.set()
            thread, pipe = self._thread, self._pipe
        with self._cond:
            self._cond.notify_all()
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.write(pipe[1], b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
            if thread.is_alive():
                return  # leave the pipe open rather than close descriptors still polled
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])

    # ---------------------------------------------------------------------------- the thread

    def _version(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute(self._version_sql).fetchall()[0][0])

    def _loop(self, conn: sqlite3.Connection, last: int) -> None:
        assert self._pipe is not None
        poller = select.poll()
        poller.register(self._pipe[0], select.POLLIN)
        inotify = self._inotify
        if inotify is not None:
            poller.register(inotify.fd, select.POLLIN)
        try:
            while self._await_waiters():
                timeout_ms = INOTIFY_CHECK_MS if inotify else self._interval_s * 1000
                ready = {fd for fd, _ in poller.poll(timeout_ms)}
                if self._stopping.is_set():
                    return
                written = inotify is not None and inotify.fd in ready
                if written and inotify is not None and not inotify.drain():
                    poller.unregister(inotify.fd)  # the -wal file went away: poll from now on
                    inotify.close()
                    inotify = self._inotify = None
                    self.mode = "poll"
                version = self._check(conn, last, HOT_WINDOW_S if written else 0.0)
                if version != last and inotify is not None:
                    # at most one wakeup per interval: busy files cost waiters O(1/interval)
                    self._stopping.wait(self._interval_s)
                last = version
        except (sqlite3.Error, OSError):
            pass  # waiters fall back to the iterator's re-reads; the next waiter restarts us
        finally:
            conn.close()
            if inotify is not None:
                inotify.close()

    def _await_waiters(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self.waiters > 0 or self._stopping.is_set())
        return not self._stopping.is_set()

    def _check(self, conn: sqlite3.Connection, last: int, window_s: float) -> int:
        """Read the version until it differs from ``last`` or ``window_s`` passed; on a change
        bump ``seq`` and wake the waiters. Returns the version read last."""
        deadline = time.monotonic() + window_s
        while True:
            version = self._version(conn)
            if version != last:
                with self._cond:
                    self.seq += 1
                    self._cond.notify_all()
                return version
            if time.monotonic() >= deadline or self._stopping.is_set():
                return last
            time.sleep(HOT_INTERVAL_S)
