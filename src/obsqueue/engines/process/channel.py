"""The engine program and the JSON Lines channel to it (docs/process-protocol.md).

:class:`Channel` starts the program, writes one request per line on its stdin and reads one
answer per line from its stdout, matching answers to requests by ``id`` so that calls from many
threads are in flight at once (a consumer's bounded ``wait`` does not hold up another thread's
``enqueue``). Every call has a deadline: an answer that does not come in time, a program that
exits, or a line that is not a well-formed answer ends the call with ``EngineUnavailableError``
within bounded time, never a hang.

The program stays in its parent's process group, so a signal sent to the group (the conformance
suite's SIGKILL and SIGSTOP) reaches it; and it must exit when its stdin reaches EOF, so a parent
killed by any means leaves nothing running. (``PR_SET_PDEATHSIG`` is not used: it fires when the
*thread* that started the program ends, and engines may be opened in short-lived threads.)
"""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from obsqueue.errors import (
    EngineClosedError,
    EngineUnavailableError,
    InvalidMessageError,
    ObsqueueError,
    StaleClaimError,
)

__all__ = ["PROTOCOL_VERSION", "Channel", "error_from_answer"]

#: The protocol version this side speaks; the program's ``hello`` answer must name the same.
PROTOCOL_VERSION = 1
_STDERR_LINES = 40
_EXIT_WAIT_S = 5.0


class _Call:
    """One request waiting for its answer."""

    __slots__ = ("answer", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Any = None
        self.error: ObsqueueError | None = None


class Channel:
    """One running engine program. Thread-safe; ``call`` blocks until the answer or the deadline.

    ``name`` is what error messages call the program (the engine's URL, password redacted);
    ``is_closed`` tells a failure caused by the engine's own close() from a broken program.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        name: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        is_closed: Callable[[], bool] = lambda: False,
    ) -> None:
        self.name = name
        self._is_closed = is_closed
        self._lock = threading.Lock()  # guards _calls, _next_id, _broken and writes to stdin
        self._calls: dict[int, _Call] = {}
        self._next_id = 1
        self._broken: str | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        try:
            self.process = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=None if env is None else dict(env),
            )
        except OSError as exc:
            raise EngineUnavailableError(
                f"{name}: cannot start the engine program {list(command)!r}: {exc}"
            ) from exc
        self._reader = self._thread(self._read_answers, self.process.stdout, "answers")
        self._stderr_reader = self._thread(self._read_stderr, self.process.stderr, "stderr")

    def _thread(self, target: Callable[[Any], None], stream: object, what: str) -> threading.Thread:
        thread = threading.Thread(
            target=target, args=(stream,), name=f"obsqueue-{what}-{self.process.pid}", daemon=True
        )
        thread.start()
        return thread

    # ------------------------------------------------------------------------------ calls

    def call(self, op: str, args: Mapping[str, Any], timeout_s: float) -> Any:
        """Send ``op`` with ``args``; return the answer's ``ok`` value or raise its error."""
        pending = _Call()
        with self._lock:
            if self._broken is not None:
                raise self._failure(self._broken)
            call_id = self._next_id
            self._next_id += 1
            self._calls[call_id] = pending
            line = json.dumps({"id": call_id, "op": op, "args": args}, ensure_ascii=False)
            try:
                self._write(line)
            except (OSError, ValueError) as exc:
                del self._calls[call_id]
                self._break_locked(f"its stdin is closed ({exc}){self._exit_note()}")
                raise self._failure(self._broken or "") from None
        if not pending.done.wait(timeout_s):
            with self._lock:
                self._calls.pop(call_id, None)
            if pending.done.is_set():  # answered between the wait and the pop
                return self._result(pending)
            raise self._failure(
                f"no answer to {op!r} within {timeout_s:g} s, so its outcome is unknown"
                f"{self._exit_note()}"
            )
        return self._result(pending)

    def _write(self, line: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(line.encode("utf-8", "surrogatepass") + b"\n")
        stdin.flush()

    @staticmethod
    def _result(pending: _Call) -> Any:
        if pending.error is not None:
            raise pending.error
        return pending.answer

    def _failure(self, problem: str) -> ObsqueueError:
        if self._is_closed():
            return EngineClosedError(f"{self.name} was closed; open a new one with open_engine()")
        return EngineUnavailableError(
            f"{self.name}: the engine program {problem}{self._stderr_note()}"
        )

    # ----------------------------------------------------------------------- reading answers

    def _read_answers(self, stream: IO[bytes]) -> None:
        for raw in stream:
            problem = self._deliver(raw)
            if problem is not None:
                self.kill()
                self._break(f"broke the protocol: {problem}")
                return
        try:
            self.process.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:  # closed its stdout but lives on: end it
            self.kill()
        self._break(f"exited with code {self.process.returncode}")

    def _deliver(self, raw: bytes) -> str | None:
        """Hand one answer line to its call; return what is wrong with it, if anything."""
        try:
            answer = json.loads(raw)
        except ValueError:
            return f"its stdout carried a line that is not JSON: {_clip(raw)}"
        call_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(call_id, int) or isinstance(call_id, bool):
            return f"an answer without an integer id: {_clip(raw)}"
        if ("ok" in answer) == ("error" in answer):
            return f"answer {call_id} must carry exactly one of 'ok' and 'error': {_clip(raw)}"
        with self._lock:
            pending = self._calls.pop(call_id, None)
        if pending is None:
            return None  # the answer to a call that timed out: too late, dropped
        if "error" in answer:
            pending.error = error_from_answer(answer["error"], self.name)
        else:
            pending.answer = answer["ok"]
        pending.done.set()
        return None

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    def _break(self, problem: str) -> None:
        with self._lock:
            self._break_locked(problem)

    def _break_locked(self, problem: str) -> None:
        if self._broken is None:
            self._broken = problem
        failure = self._failure(self._broken)
        for pending in self._calls.values():
            pending.error = failure
            pending.done.set()
        self._calls.clear()

    # ---------------------------------------------------------------------------- lifecycle

    @property
    def alive(self) -> bool:
        return self._broken is None and self.process.poll() is None

    def shutdown(self, timeout_s: float = _EXIT_WAIT_S) -> None:
        """Close the program's stdin (it must exit on EOF) and wait; kill it if it lingers."""
        with self._lock:
            stdin = self.process.stdin
            if stdin is not None and not stdin.closed:
                with contextlib.suppress(OSError):
                    stdin.close()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        for reader, stream in (
            (self._reader, self.process.stdout),
            (self._stderr_reader, self.process.stderr),
        ):
            reader.join(timeout=timeout_s)
            if stream is not None and not reader.is_alive():
                stream.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=_EXIT_WAIT_S)

    def _exit_note(self) -> str:
        code = self.process.poll()
        return "" if code is None else f" (it exited with code {code})"

    def _stderr_note(self) -> str:
        if self.process.poll() is not None:
            time.sleep(0.05)  # let the last lines of a dead program's stderr arrive
        lines = [line for line in self._stderr if line.strip()][-8:]
        return ("; its stderr ends:\n  " + "\n  ".join(lines)) if lines else ""


def error_from_answer(error: object, name: str) -> ObsqueueError:
    """The contract error an ``error`` answer names (docs/process-protocol.md, "Errors")."""
    if not isinstance(error, dict):
        return EngineUnavailableError(
            f"{name}: the engine program sent a malformed error: {error!r}"
        )
    kind, message = error.get("type"), str(error.get("message", ""))
    if kind == "InvalidMessageError":
        return InvalidMessageError(str(error.get("field") or "argument"), message)
    if kind == "StaleClaimError":
        return StaleClaimError(message)
    if kind == "EngineClosedError":
        return EngineClosedError(message)
    if kind == "EngineUnavailableError":
        return EngineUnavailableError(f"{name}: {message}")
    return EngineUnavailableError(f"{name}: the engine program failed with {kind}: {message}")


def _clip(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").rstrip()
    return repr(text if len(text) <= 200 else text[:200] + "...")
