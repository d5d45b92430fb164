"""What every throwaway server handle offers, and the process plumbing they share.

A handle owns the processes it started and signals only those, by pid. A handle made from a URL
in the environment owns nothing: ``kill9``/``restart`` on it raise, so fault tests never touch a
shared service.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from obsqueue.errors import EngineUnavailableError, ObsqueueError

__all__ = [
    "ServerHandle",
    "ServerUnavailableError",
    "free_port",
    "started",
    "kill_pid",
    "terminate",
    "wait_for_port",
    "which_or_none",
]


class ServerUnavailableError(ObsqueueError):
    """No server of this kind can be had here; the message says why and what would fix it."""


@dataclass
class ServerHandle(abc.ABC):
    """A server for one test or benchmark: its URL, and — when owned — crash and restart."""

    kind: str
    host: str = "127.0.0.1"
    port: int = 0
    owned: bool = True
    workdir: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """A URL an engine can open (without scheme prefixes such as ``rq+``)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the server (again) on the same port and data directory; wait until ready."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Server version and durability settings, for results JSON."""

    def kill9(self) -> None:
        """SIGKILL the server process this handle started (never anything else)."""
        self._require_owned("kill -9")
        if self.process is not None:
            kill_pid(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def restart(self) -> None:
        """kill -9, then start on the same data directory."""
        self.kill9()
        self.start()

    def stop(self) -> None:
        """Stop the server (``stop_signal``, then SIGKILL) and remove its data directory."""
        if not self.owned:
            return
        if self.process is not None:
            terminate(self.process, self.stop_signal, timeout_s=15)
            self.process = None
        if self.workdir is not None:
            self._before_remove()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _before_remove(self) -> None:  # noqa: B027 (a hook; most servers need nothing)
        """What ``stop`` waits for before it removes the data directory (nothing here)."""

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _require_owned(self, what: str) -> None:
        if not self.owned:
            raise EngineUnavailableError(
                f"cannot {what} a {self.kind} server this suite did not start ({self.url}); "
                "fault tests need a throwaway instance"
            )


H = TypeVar("H", bound="ServerHandle")


def started(server: H) -> H:
    """``server`` started; if starting fails (or is interrupted), stopped again — its processes
    and directory removed — before the error goes on."""
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``host:port`` accepts connections; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerUnavailableError(f"server process exited with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerUnavailableError(f"nothing answered on {host}:{port} within {timeout_s:.0f} s")


def kill_pid(pid: int, sig: signal.Signals) -> None:
    """Signal one pid we started; a process that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def terminate(process: subprocess.Popen[bytes], sig: signal.Signals, *, timeout_s: float) -> None:
    """Send ``sig`` to a process we started and reap it; SIGKILL it if it outlives ``timeout_s``."""
    kill_pid(process.pid, sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_pid(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)


def which_or_none(name: str, *extra_dirs: str) -> str | None:
    """``shutil.which`` that also looks in the given directories (e.g. PostgreSQL's bin dir)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None
