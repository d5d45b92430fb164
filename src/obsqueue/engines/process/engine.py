"""``exec+<engine>+<backend>://`` — an engine that is a program speaking the process protocol.

:class:`ProcessEngine` is the Python side of docs/process-protocol.md: it starts the program
(:class:`~obsqueue.engines.process.channel.Channel`), says ``hello`` with the protocol version
and the engine's options, and turns every primitive of the contract into one request and one
answer. Validation, the blocking iterator, ``stop`` and idle handling stay in the base class, so
a program only implements the primitives: the iterator's wait is the program's ``wait`` call,
bounded by ``WAIT_SLICE_S`` per call, so ``stop`` is seen within that slice (P13).

A subclass names its program (``program()``), its scheme, ``server_kind`` and the capabilities
it declares; the program's ``hello`` answer must declare the same ones, so the two cannot drift.
The program is told the backend URL: the engine URL with ``exec+<engine>+`` removed
(``exec+bullmq-node+redis://127.0.0.1:6390/0`` -> ``redis://127.0.0.1:6390/0``).

Engine options besides the common ones: ``call_timeout_s`` (an answer slower than this ends the
call with ``EngineUnavailableError``, outcome unknown; default 10 s) and ``start_timeout_s``
(time for the program to start and answer ``hello``, on top of ``connect_timeout_s``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from obsqueue.engines.base import (
    Claim,
    EnqueueResult,
    MessageKind,
    ObservationQueueEngine,
    PendingMessage,
    PendingMessageWithId,
    RawMessage,
    decode_payload,
)
from obsqueue.engines.process.channel import PROTOCOL_VERSION, Channel
from obsqueue.errors import (
    EngineUnavailableError,
    InvalidMessageError,
    ObsqueueError,
    redact_url,
)

__all__ = ["ProcessEngine", "Program", "backend_url"]

_CLOSE_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Program:
    """How to start an engine program: its argv, working directory and extra environment."""

    command: tuple[str, ...]
    cwd: str | None = None
    env: dict[str, str] | None = field(default=None)


def backend_url(url: str) -> str:
    """The URL the program connects to: ``exec+<engine>+`` dropped from the scheme (the whole
    URL when nothing is left, e.g. ``exec+example://``)."""
    scheme, sep, rest = url.partition("://")
    parts = scheme.split("+")
    if len(parts) < 3:
        return url
    return "+".join(parts[2:]) + sep + rest


class ProcessEngine(ObservationQueueEngine):
    """An engine whose primitives run in a program it starts; see the module docstring."""

    #: ``"exec"``: subclasses set their own ``exec+<engine>+<backend>`` scheme.
    scheme: ClassVar[str] = "exec"

    def __init__(
        self,
        url: str,
        *,
        call_timeout_s: float = 10.0,
        start_timeout_s: float = 20.0,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        for name, value in (
            ("call_timeout_s", call_timeout_s),
            ("start_timeout_s", start_timeout_s),
        ):
            _require_seconds(name, value)
        self.call_timeout_s = float(call_timeout_s)
        program = self.program()
        self._program = program
        self._channel = Channel(
            program.command,
            name=redact_url(url),
            cwd=program.cwd,
            env=program.env,
            is_closed=lambda: self._closed,
        )
        try:
            self._hello = self._say_hello(start_timeout_s + self.options.connect_timeout_s)
        except BaseException:
            self._channel.shutdown()
            raise

    def program(self) -> Program:
        """The program to start. Subclasses override this."""
        raise EngineUnavailableError(
            f"{redact_url(self.url)}: {type(self).__name__} names no program; subclass "
            "ProcessEngine and override program() (docs/process-protocol.md)"
        )

    # --------------------------------------------------------------------------- handshake

    def _say_hello(self, timeout_s: float) -> dict[str, Any]:
        o = self.options
        args = {
            "protocol": PROTOCOL_VERSION,
            "url": backend_url(self.url),
            "options": {
                "lease_ms": _ms(o.lease_s),
                "max_attempts": o.max_attempts,
                "namespace": o.namespace,
                "retry_backoff_ms": _ms(o.retry_backoff_s),
                "retry_backoff_max_ms": _ms(o.retry_backoff_max_s),
                "connect_timeout_ms": _ms(o.connect_timeout_s),
            },
        }
        hello = self._channel.call("hello", args, timeout_s)
        if not isinstance(hello, dict):
            raise self._protocol_error("hello", hello)
        if hello.get("protocol") != PROTOCOL_VERSION:
            raise EngineUnavailableError(
                f"{redact_url(self.url)}: the engine program speaks protocol version "
                f"{hello.get('protocol')!r}, this obsqueue speaks {PROTOCOL_VERSION}: upgrade the "
                "one that is behind (docs/process-protocol.md, 'Versions')"
            )
        self._check_capabilities(hello.get("capabilities"))
        return hello

    def _check_capabilities(self, declared: object) -> None:
        if declared is None:
            return
        mine = {c.value for c in self.capabilities}
        if not isinstance(declared, list) or set(declared) != mine:
            theirs = set(declared) if isinstance(declared, list) else set()
            raise EngineUnavailableError(
                f"{redact_url(self.url)}: the program declares capabilities that differ from "
                f"{type(self).__name__}.capabilities: only in the program "
                f"{sorted(theirs - mine)}, only in the class {sorted(mine - theirs)}; make them "
                "the same"
            )

    # ------------------------------------------------------------------------------- calls

    def _call(self, op: str, timeout_s: float | None = None, **args: Any) -> Any:
        return self._channel.call(op, args, self.call_timeout_s if timeout_s is None else timeout_s)

    def _protocol_error(self, op: str, answer: object) -> EngineUnavailableError:
        shown = repr(answer)
        shown = shown if len(shown) <= 300 else shown[:300] + "..."
        return EngineUnavailableError(
            f"{redact_url(self.url)}: the engine program broke the protocol: {op!r} answered "
            f"{shown} (docs/process-protocol.md, 'Operations')"
        )

    def _int(self, op: str, answer: object) -> int:
        if isinstance(answer, bool) or not isinstance(answer, int) or answer < 0:
            raise self._protocol_error(op, answer)
        return answer

    def _claim_args(self, msg: PendingMessageWithId) -> dict[str, Any]:
        assert msg.claim is not None  # checked by the base class
        return {"id": msg.id, "session_id": msg.session_id, "token": msg.claim.token}

    # -------------------------------------------------------------------------- primitives

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        answer = self._call(
            "enqueue",
            session_id=session_id,
            content_session_id=content_session_id,
            kind=message.kind,
            tool_use_id=message.tool_use_id,
            payload_json=payload_json,
            original_timestamp=message.original_timestamp,
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("duplicate"), bool):
            raise self._protocol_error("enqueue", answer)
        return EnqueueResult(self._int("enqueue", answer.get("message_id")), answer["duplicate"])

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        answer = self._call(
            "claim_next", session_id=session_id, consumer_id=consumer_id, lease_ms=_ms(lease_s)
        )
        return None if answer is None else self._delivered(answer)

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        self._call("mark_processed", **self._claim_args(msg))

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        self._call(
            "mark_failed",
            **self._claim_args(msg),
            reason=reason,
            retry=retry,
            attempt=msg.attempt,
            retry_delay_ms=self.retry_delay_ms(msg.attempt),
        )

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        answer = self._call("extend_lease", **self._claim_args(msg), lease_ms=_ms(lease_s))
        if not isinstance(answer, dict):
            raise self._protocol_error("extend_lease", answer)
        assert msg.claim is not None
        expires = self._int("extend_lease", answer.get("lease_expires_at_ms"))
        return Claim(msg.claim.token, expires, str(answer.get("consumer_id") or ""))

    def _pending_count(self, session_id: str) -> int:
        return self._int("pending_count", self._call("pending_count", session_id=session_id))

    def _total_depth(self) -> int:
        return self._int("total_depth", self._call("total_depth"))

    def _clear_pending(self, session_id: str) -> int:
        return self._int("clear_pending", self._call("clear_pending", session_id=session_id))

    def _reset_processing(self, session_id: str | None) -> int:
        answer = self._call("reset_processing", session_id=session_id)
        return self._int("reset_processing", answer)

    # ------------------------------------------------------------------------------ wakeup

    def _wakeup_mark(self, session_id: str) -> object:
        return None  # the program remembers a wake that comes before the wait

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        wait_ms = min(_ms(timeout_s), _ms(self.WAIT_SLICE_S))
        if not self._closed:
            self._call(
                "wait", wait_ms / 1000 + self.call_timeout_s, session_id=session_id, wait_ms=wait_ms
            )

    # ------------------------------------------------------------- oracle, describe, destroy

    def inspect_raw(self) -> list[RawMessage]:
        self._check_open()
        answer = self._call("inspect_raw")
        if not isinstance(answer, list):
            raise self._protocol_error("inspect_raw", answer)
        return sorted((self._raw(row) for row in answer), key=lambda m: m.id)

    def describe(self) -> dict[str, Any]:
        self._check_open()
        answer = self._call("describe")
        if not isinstance(answer, dict):
            raise self._protocol_error("describe", answer)
        program = {
            "protocol_version": PROTOCOL_VERSION,
            "command": list(self._program.command),
            "engine": self._hello.get("engine"),
            "runtime": self._hello.get("runtime"),
        }
        return {**answer, "program": program}

    def destroy(self) -> None:
        self._check_open()
        self._call("destroy", self.call_timeout_s * 3)

    def _close(self) -> None:
        if self._channel.alive:
            with contextlib.suppress(ObsqueueError):  # closing anyway: ended below
                self._channel.call("close", {}, _CLOSE_WAIT_S)
        self._channel.shutdown()

    # ---------------------------------------------------------------------- answers to objects

    def _delivered(self, m: object) -> PendingMessageWithId:
        try:
            assert isinstance(m, dict)
            return PendingMessageWithId(
                kind=_kind(m["kind"]),
                tool_use_id=_opt_str(m.get("tool_use_id")),
                payload=decode_payload(m["payload_json"]),
                original_timestamp=_int(m["original_timestamp"]),
                id=_int(m["id"]),
                session_id=_str(m["session_id"]),
                content_session_id=_str(m["content_session_id"]),
                attempt=_int(m["attempt"]),
                claim=Claim(
                    _int(m["token"]),
                    _int(m["lease_expires_at_ms"]),
                    str(m.get("consumer_id") or ""),
                ),
                enqueued_at_ms=_opt_int(m.get("enqueued_at_ms")),
            )
        except (AssertionError, KeyError, TypeError, ValueError):
            raise self._protocol_error("claim_next", m) from None

    def _raw(self, m: object) -> RawMessage:
        try:
            assert isinstance(m, dict)
            assert m["status"] in ("pending", "processing", "dead")
            return RawMessage(
                id=_int(m["id"]),
                session_id=_str(m["session_id"]),
                content_session_id=_str(m["content_session_id"]),
                kind=_str(m["kind"]),
                tool_use_id=_opt_str(m.get("tool_use_id")),
                payload=decode_payload(m["payload_json"]),
                original_timestamp=_int(m["original_timestamp"]),
                status=m["status"],
                attempt=_int(m["attempt"]),
                claim_token=_opt_int(m.get("claim_token")),
                lease_expires_at_ms=_opt_int(m.get("lease_expires_at_ms")),
                last_error=_opt_str(m.get("last_error")),
            )
        except (AssertionError, KeyError, TypeError, ValueError):
            raise self._protocol_error("inspect_raw", m) from None


def _kind(value: object) -> MessageKind:
    if value == "observation":
        return "observation"
    if value == "summarize":
        return "summarize"
    raise ValueError(f"unknown kind {value!r}")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {value!r}")
    return value


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a str, got {value!r}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _require_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidMessageError(name, f"must be a positive number of seconds, got {value!r}")
