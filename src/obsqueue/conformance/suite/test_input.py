"""P14 bad input and unreachable servers, and P16 close."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from obsqueue.conformance.plugin import Recorder
from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import CS, drain, guarantee, keyed
from obsqueue.engines.base import ObservationQueueEngine, PendingMessage
from obsqueue.errors import EngineClosedError, EngineUnavailableError, InvalidMessageError

__all__ = ["TestBadInput", "TestClose"]

GOOD = keyed("good", "t-good")

#: (name, (session_id, content_session_id, message), the field the error must name)
BAD_ENQUEUES: list[tuple[str, tuple[Any, Any, Any], str]] = [
    ("session_none", (None, CS, GOOD), "session_id"),
    ("session_empty", ("", CS, GOOD), "session_id"),
    ("session_blank", ("   ", CS, GOOD), "session_id"),
    ("session_bool", (True, CS, GOOD), "session_id"),
    ("session_float", (1.5, CS, GOOD), "session_id"),
    ("session_list", (["s"], CS, GOOD), "session_id"),
    ("content_session_empty", ("s1", "", GOOD), "content_session_id"),
    ("content_session_int", ("s1", 5, GOOD), "content_session_id"),
    ("message_dict", ("s1", CS, {"kind": "observation"}), "message"),
    ("kind_unknown", ("s1", CS, PendingMessage("bogus", None, {})), "kind"),  # type: ignore[arg-type]
    ("tool_use_id_empty", ("s1", CS, PendingMessage("observation", "", {})), "tool_use_id"),
    ("tool_use_id_int", ("s1", CS, PendingMessage("observation", 7, {})), "tool_use_id"),  # type: ignore[arg-type]
    ("payload_set", ("s1", CS, PendingMessage("observation", None, {1, 2})), "payload"),
    (
        "payload_nan",
        ("s1", CS, PendingMessage("observation", None, {"x": float("nan")})),
        "payload",
    ),
    ("payload_object", ("s1", CS, PendingMessage("observation", None, object())), "payload"),
    ("payload_int_keys", ("s1", CS, PendingMessage("observation", None, {1: "a"})), "payload"),
    ("payload_tuple", ("s1", CS, PendingMessage("observation", None, {"t": (1, 2)})), "payload"),
    (
        "timestamp_negative",
        ("s1", CS, PendingMessage("observation", None, {}, -1)),
        "original_timestamp",
    ),
    (
        "timestamp_float",
        ("s1", CS, PendingMessage("observation", None, {}, 1.5)),  # type: ignore[arg-type]
        "original_timestamp",
    ),
    (
        "timestamp_str",
        ("s1", CS, PendingMessage("observation", None, {}, "now")),  # type: ignore[arg-type]
        "original_timestamp",
    ),
    (
        "timestamp_bool",
        ("s1", CS, PendingMessage("observation", None, {}, True)),
        "original_timestamp",
    ),
]


class TestBadInput:
    @guarantee("P14")
    @pytest.mark.parametrize(
        ("case", "args", "field"), BAD_ENQUEUES, ids=[c[0] for c in BAD_ENQUEUES]
    )
    def test_bad_enqueue_names_the_field_and_writes_nothing(
        self,
        queue_engine: ObservationQueueEngine,
        case: str,
        args: tuple[Any, Any, Any],
        field: str,
    ) -> None:
        """An invalid argument raises InvalidMessageError naming the field; nothing is stored
        and the engine keeps working."""
        with pytest.raises(InvalidMessageError) as info:
            queue_engine.enqueue(*args)
        assert field in str(info.value)
        stored = queue_engine.inspect_raw()
        assert stored == [], f"bad input was written: {stored}"
        assert queue_engine.get_total_queue_depth() == 0
        queue_engine.enqueue("s1", CS, GOOD)
        assert len(drain(queue_engine, "s1", 1)) == 1

    @guarantee("P14")
    def test_bad_arguments_to_other_calls_are_rejected(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Bad session ids, leases and messages given to the other calls are rejected too."""
        calls: list[tuple[Callable[[], Any], str]] = [
            (lambda: queue_engine.get_pending_count(None), "session_id"),  # type: ignore[arg-type]
            (lambda: queue_engine.clear_pending_for_session(""), "session_id"),
            (lambda: queue_engine.reset_processing_to_pending(3.5), "session_id"),  # type: ignore[arg-type]
            (lambda: queue_engine.create_iterator("s1", lease_s=0), "lease_s"),
            (lambda: queue_engine.create_iterator("s1", idle_timeout=-1), "idle_timeout"),
            (lambda: queue_engine.mark_processed("7"), "msg"),  # type: ignore[arg-type]
            (lambda: queue_engine.mark_failed(GOOD, "x"), "msg"),  # type: ignore[arg-type]
        ]
        for call, field in calls:
            with pytest.raises(InvalidMessageError, match=field):
                call()
        assert queue_engine.inspect_raw() == []

    @guarantee("P14")
    def test_unreachable_server_raises_unavailable_in_bounded_time(
        self, obsqueue_engine_spec: EngineSpec, obsqueue_record: Recorder
    ) -> None:
        """Given a URL whose server does not answer, opening raises EngineUnavailableError
        within the connect timeout plus a few seconds, with no password in the message."""
        if obsqueue_engine_spec.engine_class.server_kind is None:
            pytest.skip("unsupported: embedded engine: there is no server to be unreachable")
        spec = EngineSpec(
            _unreachable(obsqueue_engine_spec.url),
            {**obsqueue_engine_spec.options, "connect_timeout_s": 2.0},
            obsqueue_engine_spec.registrations,
        )
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError) as info:
            spec.open()
        took = time.monotonic() - started
        obsqueue_record.timing("unreachable_raise_s", took)
        assert took < 10.0
        assert "s3cret" not in str(info.value)


def _unreachable(url: str) -> str:
    """The same URL pointed at a loopback port nothing listens on, with a password in it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    parts = urlsplit(url)
    user = parts.username or "obsq"
    return urlunsplit(
        (parts.scheme, f"{user}:s3cret@127.0.0.1:{port}", parts.path, parts.query, parts.fragment)
    )


OPERATIONS: dict[str, Callable[[ObservationQueueEngine], Any]] = {
    "enqueue": lambda e: e.enqueue("s1", CS, GOOD),
    "create_iterator": lambda e: next(iter(e.create_iterator("s1", idle_timeout=0.1))),
    "claim_next": lambda e: e.claim_next("s1"),
    "get_pending_count": lambda e: e.get_pending_count("s1"),
    "get_total_queue_depth": lambda e: e.get_total_queue_depth(),
    "clear_pending_for_session": lambda e: e.clear_pending_for_session("s1"),
    "reset_processing_to_pending": lambda e: e.reset_processing_to_pending(),
    "enqueue_many": lambda e: e.enqueue_many([("s1", CS, GOOD)]),
}


class TestClose:
    @guarantee("P16")
    def test_close_is_idempotent(self, queue_engine: ObservationQueueEngine) -> None:
        queue_engine.close()
        queue_engine.close()
        assert queue_engine.closed

    @guarantee("P16")
    @pytest.mark.parametrize("operation", sorted(OPERATIONS))
    def test_use_after_close_raises(
        self, queue_engine: ObservationQueueEngine, operation: str
    ) -> None:
        """Every operation on a closed engine raises EngineClosedError."""
        queue_engine.close()
        with pytest.raises(EngineClosedError):
            OPERATIONS[operation](queue_engine)

    @guarantee("P16")
    def test_acking_after_close_raises(self, queue_engine: ObservationQueueEngine) -> None:
        queue_engine.enqueue("s1", CS, GOOD)
        msg = queue_engine.claim_next("s1")
        assert msg is not None
        queue_engine.close()
        with pytest.raises(EngineClosedError):
            queue_engine.mark_processed(msg)
        with pytest.raises(EngineClosedError):
            queue_engine.mark_failed(msg, "x")

    @guarantee("P16")
    def test_iterator_running_when_closed_stops_with_closed_error(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        iterator = queue_engine.create_iterator("s1")
        queue_engine.close()
        with pytest.raises(EngineClosedError):
            next(iter(iterator))
