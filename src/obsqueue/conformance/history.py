"""The operation history: every process logs each call when it starts and when it ends.

Each process appends JSON lines to ``<directory>/<process>.jsonl``, one :class:`Op` per line. A
call is an *invoke* line, then a completion line with the same ``op_id``: ``ok``, ``fail`` (the call
certainly did not take effect) or ``info`` (outcome unknown). A call that never got a completion —
the process was SIGKILLed inside it, or gave up waiting — is completed by :func:`load_history`
with a synthetic ``info`` at :data:`INFO_TIME_NS`: it may take effect at any time after its invoke.

Durability of the log itself: every line is written with one ``os.write`` on an ``O_APPEND`` file
descriptor, never buffered in the process, so it survives SIGKILL of the writer (the kernel keeps
written bytes; there is no fsync, because the log need not survive a crash of the machine). A write
cut short by SIGKILL leaves a torn last line, which loading skips; a new writer for the same
process name truncates it away and continues the sequence numbers.

Times are ``time.time_ns()``: wall clock, comparable across processes of one machine.

Value conventions (``Op.value``, JSON-serialisable):

- ``enqueue``: invoke ``{"session", "key", "tool_use_id"}`` — ``key`` is unique per enqueue call
  across the whole test and travels in the payload as ``payload["key"]``; ok ``{"message_id": int,
  "duplicate": bool}`` (a duplicate names an existing message: it is not a separate message).
- ``deliver``: an instantaneous event (invoke + ok at one time), logged by the consumer when the
  iterator yields: ``{"session", "message_session", "key", "message_id", "attempt", "token",
  "lease_expires_at_ms"}`` — ``session`` is the session the consumer iterated,
  ``message_session`` the one the delivered message says it belongs to (absent: the same).
- ``ack`` (``mark_processed``): invoke ``{"session", "key", "message_id", "token"}``; ok ``{}``;
  fail ``{"error": "StaleClaimError: ..."}``.
- ``fail`` (``mark_failed``): invoke as ``ack`` plus ``"retry": bool``; ok / fail as ``ack``.
- ``extend`` (``extend_lease``): invoke as ``ack``; ok ``{"lease_expires_at_ms": int}``.
- ``reset`` / ``clear``: invoke ``{"session": str | None}`` (``None``: every session);
  ok ``{"count": int}``.

Record ``fail`` only when the call surely changed nothing (``StaleClaimError``, bad input); an
error that leaves the outcome open (a dropped connection) is ``info`` or no completion at all.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, cast, get_args

__all__ = [
    "COMPLETIONS",
    "INFO_TIME_NS",
    "OP_NAMES",
    "HistoryError",
    "HistoryWriter",
    "Op",
    "Phase",
    "complete_history",
    "error_value",
    "load_history",
    "read_history_file",
    "save_history",
]

Phase = Literal["invoke", "ok", "fail", "info"]

#: The phases that complete an invoke.
COMPLETIONS: Final = frozenset({"ok", "fail", "info"})

#: The operations the suite logs (``HistoryWriter`` refuses others, so typos cannot hide).
OP_NAMES: Final = frozenset({"enqueue", "deliver", "ack", "fail", "reset", "clear", "extend"})

#: The time of a synthetic completion: the call's outcome is unknown, it may land at any time.
INFO_TIME_NS: Final = 2**63 - 1

_PHASES: Final = frozenset(get_args(Phase))


class HistoryError(ValueError):
    """A history file is malformed (other than a torn last line), or calls do not pair up."""


@dataclass(frozen=True, slots=True)
class Op:
    """One line of a history: a call's invoke or its completion."""

    process: str
    seq: int
    f: str
    phase: Phase
    time_ns: int
    value: dict[str, Any] = field(hash=False)
    op_id: int

    def to_json(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "seq": self.seq,
            "f": self.f,
            "phase": self.phase,
            "time_ns": self.time_ns,
            "op_id": self.op_id,
            "value": self.value,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Op:
        """Parse one record, raising ``HistoryError`` on a missing or mistyped field."""
        try:
            op = cls(
                str(doc["process"]),
                _as_int(doc["seq"]),
                str(doc["f"]),
                cast(Phase, doc["phase"]),
                _as_int(doc["time_ns"]),
                dict(doc["value"]),
                _as_int(doc["op_id"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise HistoryError(f"not a history record: {exc!r}: {doc!r:.200}") from exc
        if op.phase not in _PHASES:
            raise HistoryError(f"unknown phase {op.phase!r} in {doc!r:.200}")
        return op

    def sort_key(self) -> tuple[int, str, int]:
        return (self.time_ns, self.process, self.seq)


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def error_value(exc: BaseException) -> dict[str, Any]:
    """The completion value of a failed call: ``{"error": "ClassName: message"}``."""
    return {"error": f"{type(exc).__name__}: {exc}"}


class HistoryWriter:
    """Appends one process's history to ``<directory>/<process>.jsonl``; thread-safe.

    One writer per process name at a time. ``clock`` exists for simulations in tests.
    """

    def __init__(
        self, directory: Path, process: str, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        if not process or process != Path(process).name or process.startswith("."):
            raise ValueError(f"process: {process!r} must be a plain file name")
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{process}.jsonl"
        self.process = process
        self._clock = clock
        self._seq = _prepare_for_append(self.path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._open_calls: dict[int, str] = {}

    def invoke(self, f: str, value: Mapping[str, Any]) -> int:
        """Log the start of a call; returns its ``op_id`` for the completion."""
        _check_name(f)
        with self._lock:
            op_id = self._write_locked(f, ["invoke"], value, None)
            self._open_calls[op_id] = f
        return op_id

    def ok(self, op_id: int, f: str, value: Mapping[str, Any]) -> None:
        """Log that call ``op_id`` returned; ``value`` is what it returned."""
        self._complete(op_id, f, "ok", value)

    def fail(self, op_id: int, f: str, value: Mapping[str, Any]) -> None:
        """Log that call ``op_id`` certainly did not take effect; ``value`` has ``"error"``."""
        self._complete(op_id, f, "fail", value)

    def info(self, op_id: int, f: str, value: Mapping[str, Any]) -> None:
        """Log that call ``op_id`` ended with its outcome unknown (e.g. a dropped connection)."""
        self._complete(op_id, f, "info", value)

    def event(self, f: str, value: Mapping[str, Any]) -> int:
        """Log an instantaneous op (invoke and ok at one time, in one write); returns its op_id."""
        _check_name(f)
        with self._lock:
            return self._write_locked(f, ["invoke", "ok"], value, None)

    def call(
        self,
        f: str,
        value: Mapping[str, Any],
        *,
        unknown: tuple[type[BaseException], ...] = (),
    ) -> _Call:
        """Log a call around a ``with`` body: ok on success, fail on an exception (re-raised).

        The body adds to the completion value through the dict the ``with`` statement yields.
        Exceptions in ``unknown`` (and ``BaseException``s such as ``KeyboardInterrupt``) are
        logged as ``info``: the call may or may not have taken effect.
        """
        return _Call(self, f, value, unknown)

    def close(self) -> None:
        """Close the file; idempotent."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _complete(self, op_id: int, f: str, phase: Phase, value: Mapping[str, Any]) -> None:
        with self._lock:
            expected = self._open_calls.get(op_id)
            if expected != f:
                raise ValueError(
                    f"op_id: {op_id} is not an open {f!r} call of {self.process}"
                    + (f" (it is {expected!r})" if expected else "")
                )
            self._write_locked(f, [phase], value, op_id)
            del self._open_calls[op_id]

    def _write_locked(
        self, f: str, phases: list[Phase], value: Mapping[str, Any], op_id: int | None
    ) -> int:
        if self._fd is None:
            raise ValueError(f"history writer for {self.process} is closed")
        now = self._clock()
        first = self._seq
        lines = []
        for i, phase in enumerate(phases):
            op = Op(
                self.process,
                first + i,
                f,
                phase,
                now,
                dict(value),
                first if op_id is None else op_id,
            )
            lines.append(json.dumps(op.to_json(), separators=(",", ":")) + "\n")
        _write_all(self._fd, "".join(lines).encode())
        self._seq = first + len(phases)
        return first if op_id is None else op_id


class _Call:
    """The context manager behind ``HistoryWriter.call``."""

    def __init__(
        self,
        writer: HistoryWriter,
        f: str,
        value: Mapping[str, Any],
        unknown: tuple[type[BaseException], ...],
    ) -> None:
        self._writer, self._f, self._value, self._unknown = writer, f, value, unknown
        self.result: dict[str, Any] = {}
        self.op_id = -1

    def __enter__(self) -> dict[str, Any]:
        self.op_id = self._writer.invoke(self._f, self._value)
        return self.result

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self._writer.ok(self.op_id, self._f, self.result)
        elif isinstance(exc, self._unknown) or not isinstance(exc, Exception):
            self._writer.info(self.op_id, self._f, {**self.result, **error_value(exc)})
        else:
            self._writer.fail(self.op_id, self._f, {**self.result, **error_value(exc)})


def _check_name(f: str) -> None:
    if f not in OP_NAMES:
        raise ValueError(f"f: {f!r} is not one of {sorted(OP_NAMES)}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _prepare_for_append(path: Path) -> int:
    """Truncate a torn last line left by a killed writer; return the next sequence number."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        os.truncate(path, len(complete))
    ops = _parse_lines(complete.decode(errors="replace"), str(path))
    return max((op.seq for op in ops), default=-1) + 1


def _parse_lines(text: str, where: str) -> list[Op]:
    """Parse JSON lines; a bad *last* line is a torn write and is skipped, any other is an error."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    ops = []
    for number, line in enumerate(lines, 1):
        try:
            ops.append(Op.from_json(json.loads(line)))
        except (ValueError, TypeError) as exc:  # JSONDecodeError and HistoryError included
            if number == len(lines):
                break
            raise HistoryError(f"{where}:{number}: {exc}") from exc
    return ops


def complete_history(ops: Iterable[Op]) -> list[Op]:
    """Pair invokes with completions, add a synthetic ``info`` for each open call, and sort.

    Raises ``HistoryError`` for a completion without its invoke, or a call completed twice.
    """
    ops = list(ops)
    invokes: dict[tuple[str, int], Op] = {}
    done: set[tuple[str, int]] = set()
    for op in ops:
        ident = (op.process, op.op_id)
        if op.phase == "invoke":
            if ident in invokes:
                raise HistoryError(f"{op.process} invoked op {op.op_id} twice")
            invokes[ident] = op
        elif ident in done:
            raise HistoryError(f"{op.process} completed op {op.op_id} twice")
        else:
            done.add(ident)
    if orphans := done - invokes.keys():
        raise HistoryError(f"completions without an invoke: {sorted(orphans)[:5]}")
    return sorted([*ops, *_synthetic_infos(ops, invokes, done)], key=Op.sort_key)


def _synthetic_infos(
    ops: list[Op], invokes: dict[tuple[str, int], Op], done: set[tuple[str, int]]
) -> Iterator[Op]:
    next_seq: dict[str, int] = {}
    for op in ops:
        next_seq[op.process] = max(next_seq.get(op.process, 0), op.seq + 1)
    for ident in sorted(invokes.keys() - done):
        invoke = invokes[ident]
        seq = next_seq[invoke.process]
        next_seq[invoke.process] = seq + 1
        yield Op(
            invoke.process,
            seq,
            invoke.f,
            "info",
            INFO_TIME_NS,
            {"reason": "no completion recorded"},
            invoke.op_id,
        )


def load_history(directory: Path) -> list[Op]:
    """Read every ``*.jsonl`` file of ``directory`` into one completed, sorted history."""
    ops: list[Op] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        ops.extend(_parse_lines(path.read_bytes().decode(errors="replace"), str(path)))
    return complete_history(ops)


def save_history(ops: Iterable[Op], path: Path) -> None:
    """Write a history to one JSONL file, so a run can be re-checked offline."""
    text = "".join(json.dumps(op.to_json(), separators=(",", ":")) + "\n" for op in ops)
    Path(path).write_text(text)


def read_history_file(path: Path) -> list[Op]:
    """Read a file written by ``save_history`` (or one process's log): completed and sorted."""
    text = Path(path).read_bytes().decode(errors="replace")
    return complete_history(_parse_lines(text, str(path)))
