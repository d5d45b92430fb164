"""Fault helpers: child processes the suite can SIGKILL, SIGSTOP and SIGCONT, by pid.

``Child`` starts ``obsqueue.conformance.workers`` with a config, reads its JSON progress lines on
a thread, and signals only what it started: the worker runs in a process group of its own, and
signals go to that group, so an engine program the worker started (``exec+…://`` engines) is
SIGKILLed and SIGSTOPped with it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from obsqueue.conformance.spec import EngineSpec

__all__ = ["Child", "ChildError", "announcing_consumer", "claim_holder", "start_child"]


class ChildError(RuntimeError):
    """A child process did not say what the test waited for; the message carries its stderr."""


class Child:
    """One worker process. Use as a context manager: it is killed on exit if still running."""

    def __init__(self, role: str, config: dict[str, Any], log_dir: Path) -> None:
        self.role = role
        self.name = str(config["process"])
        self.stderr_path = log_dir / f"{self.name}.stderr"
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "obsqueue.conformance.workers",
                    json.dumps({"role": role, **config}),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                process_group=0,
            )
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        with stream:  # closed at EOF, by this thread: no pipe is left to the collector
            self._read_events(stream)

    def _read_events(self, stream: IO[bytes]) -> None:
        for line in stream:
            try:
                self._events.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        self._events.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def expect(self, event: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait for the next progress line with ``event``; raise ChildError if it does not come."""
        while True:
            try:
                item = self._events.get(timeout=timeout_s)
            except queue.Empty:
                msg = f"{self.name}: no {event!r} within {timeout_s} s{self._tail()}"
                raise ChildError(msg) from None
            if item is None:
                raise ChildError(f"{self.name}: exited before {event!r}{self._tail()}")
            if item.get("event") == event:
                return item

    def drain_events(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return items
            if item is not None:
                items.append(item)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def sigkill(self) -> None:
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def sigstop(self) -> None:
        self._signal(signal.SIGSTOP)

    def sigcont(self) -> None:
        self._signal(signal.SIGCONT)

    def wait(self, timeout_s: float = 30.0) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            msg = f"{self.name}: still running after {timeout_s} s{self._tail()}"
            raise ChildError(msg) from None

    def _signal(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def _tail(self) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""
        return f"\n--- stderr of {self.name} ---\n{text}" if text.strip() else ""

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        if self.process.stdin is not None:
            self.process.stdin.close()
        self._reader.join(timeout=5)


def start_child(
    role: str, spec: EngineSpec, history_dir: Path, process: str, **config: Any
) -> Child:
    """Start a worker of ``role`` on ``spec``, logging its history under ``history_dir``."""
    history_dir.mkdir(parents=True, exist_ok=True)
    full = {
        "spec": json.loads(spec.to_json()),
        "history_dir": str(history_dir),
        "process": process,
        **config,
    }
    return Child(role, full, history_dir)


def claim_holder(
    spec: EngineSpec, directory: Path, lease_s: float, process: str = "holder"
) -> Child:
    """A process that claims session s1's head under ``lease_s``, says ``claimed``, then obeys
    ``ack``, ``fail`` and ``exit`` on its stdin."""
    return start_child(
        "claim_and_hold", spec, directory / "h", process, session="s1", lease_s=lease_s
    )


def announcing_consumer(spec: EngineSpec, directory: Path, process: str = "consumer") -> Child:
    """A consumer process of session s1 that says ``delivered`` for each message it acks; it
    stops once ``directory / "stop"`` exists."""
    return start_child(
        "consume",
        spec,
        directory / "h",
        process,
        sessions=["s1"],
        stop_file=str(directory / "stop"),
        announce=True,
    )
