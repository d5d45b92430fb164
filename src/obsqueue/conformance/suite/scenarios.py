"""Small building blocks the suite's tests share: messages with keys, draining, the oracle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

from obsqueue.conformance.checker import CheckResult, check_history
from obsqueue.conformance.history import load_history
from obsqueue.engines.base import (
    ObservationQueueEngine,
    PendingMessage,
    PendingMessageWithId,
    RawMessage,
)

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "CS",
    "check",
    "drain",
    "drain_many",
    "final_rows",
    "guarantee",
    "key_of",
    "keyed",
    "raw_keys",
    "wait_until",
]

#: The content session most tests enqueue under.
CS = "content-1"


def keyed(key: str, tool_use_id: str | None = None, **extra: Any) -> PendingMessage:
    """A message whose payload carries ``key``, so the suite can follow it anywhere."""
    return PendingMessage("observation", tool_use_id, {"key": key, **extra})


def key_of(msg: PendingMessageWithId | RawMessage) -> str:
    payload = msg.payload
    return str(payload.get("key")) if isinstance(payload, dict) else repr(payload)


def drain(
    engine: ObservationQueueEngine,
    session: str,
    expect: int,
    *,
    timeout_s: float = 15.0,
    ack: bool = True,
) -> list[PendingMessageWithId]:
    """Iterate ``session`` until ``expect`` messages came (acking each) or time runs out.

    Every message must belong to ``session`` (else ``AssertionError``: misdelivered). ``stop``
    ends the wait at ``timeout_s``; ``idle_timeout`` is a backstop, so an engine whose iterator
    ignores ``stop`` (a P13 failure, checked on its own) still lets other checks end."""

    def iterate(stop: threading.Event) -> Iterator[PendingMessageWithId]:
        return engine.create_iterator(session, stop=stop, idle_timeout=timeout_s)

    return _collect(engine, iterate, [session], expect, timeout_s, ack)


def drain_many(
    engine: ObservationQueueEngine,
    sessions: list[str] | None,
    expect: int,
    *,
    timeout_s: float = 20.0,
    ack: bool = True,
    idle_s: float | None = None,
) -> list[PendingMessageWithId]:
    """``drain`` through the many-session iterator over ``sessions`` (None: every session),
    ending also after ``idle_s`` without a message."""

    def iterate(stop: threading.Event) -> Iterator[PendingMessageWithId]:
        idle = idle_s or timeout_s
        return engine.create_multi_session_iterator(sessions, stop=stop, idle_timeout=idle)

    return _collect(engine, iterate, sessions, expect, timeout_s, ack)


def _collect(
    engine: ObservationQueueEngine,
    iterate: Callable[[threading.Event], Iterator[PendingMessageWithId]],
    sessions: list[str] | None,
    expect: int,
    timeout_s: float,
    ack: bool,
) -> list[PendingMessageWithId]:
    got: list[PendingMessageWithId] = []
    stop = threading.Event()
    timer = threading.Timer(timeout_s, stop.set)
    timer.daemon = True
    timer.start()
    try:
        for msg in iterate(stop):
            assert sessions is None or msg.session_id in sessions, (
                f"misdelivered: iterating {sessions} yielded message {msg.id} "
                f"({key_of(msg)}) of session {msg.session_id!r}"
            )
            got.append(msg)
            if ack:
                engine.mark_processed(msg)
            if len(got) >= expect:
                break
    finally:
        timer.cancel()
    return got


def raw_keys(engine: ObservationQueueEngine, status: str | None = None) -> list[str]:
    return [key_of(m) for m in engine.inspect_raw() if status in (None, m.status)]


def final_rows(engine: ObservationQueueEngine) -> list[dict[str, Any]]:
    """The backdoor oracle's rows in the shape the history checker reads."""
    return [
        {"message_id": m.id, "session": m.session_id, "key": key_of(m), "status": m.status}
        for m in engine.inspect_raw()
    ]


def check(history_dir: Path, engine: ObservationQueueEngine) -> CheckResult:
    """Check a scenario's saved history against what the backend holds now."""
    return check_history(load_history(history_dir), final_rows(engine))


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def guarantee(property_id: str, *also: Any) -> Callable[[F], F]:
    """Mark a test as checking ``property_id``, requiring its capability and ``also``."""
    import pytest

    from obsqueue.conformance.properties import property_by_id

    prop = property_by_id(property_id)

    def decorate(func: F) -> F:
        func = pytest.mark.requires(prop.capability, *also)(func)
        return cast(F, pytest.mark.obsqueue_property(property_id)(func))

    return decorate
