"""P10 fidelity, P11 depth and P12 clear."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import CS, drain, guarantee, key_of, keyed
from obsqueue.engines.base import Capability, ObservationQueueEngine, PendingMessage

__all__ = ["TestClear", "TestDepth", "TestFidelity"]

PAYLOADS: dict[str, Any] = {
    "unicode": {"text": "naïve café — 日本語 — עברית — 😀👩‍💻 — e\u0301", "k-\u00e9": "v"},
    "nesting": {"a": [{"b": [1, 2, {"c": None}]}, [], {}], "depth": [[[[[["deep"]]]]]]},
    "numbers": {
        "int": 2**53 - 1,
        "neg": -17,
        "float": 0.1,
        "exp": 1e-300,
        "zero": 0.0,
        "bool": True,
        "false": False,
        "null": None,
    },
    "one_mib": {"blob": "x" * (1024 * 1024)},
    "list_root": [1, "two", 3.5, None],
    "string_root": "just a string",
    "empty": {},
    "control_chars": {"s": 'tab\tnewline\nquote"backslash\\ bell\u0007 nul-free'},
    # NUL in values and keys: an engine stores it faithfully (PostgreSQL text cannot hold it
    # raw: the engine must escape it), never strips or truncates it
    "nul": {"s": "before\u0000after", "k\u0000": "\u0000", "list": ["\u0000\u0000"]},
    # characters outside the BMP (4 bytes in UTF-8, surrogate pairs in UTF-16 / JSON escapes)
    "non_bmp": {"s": "\U0001d11e \U00010348 \U0001f004 \U0010ffff", "\U0001f600": ["\U0001f600"]},
    # large and non-ASCII at once: 1 Mi characters, about 3 MiB of UTF-8
    "large_non_ascii": {"blob": "\u00e9\u65e5\U0001f600\u05d0" * (256 * 1024)},
}

TIMESTAMPS = [0, 1, 1763800000123, 2**53 - 1]


def _exact(value: Any) -> str:
    """A form in which True and 1, 1.0 and 1 differ: exact round-trip compares these."""
    return json.dumps(value, sort_keys=True)


class TestFidelity:
    @guarantee("P10")
    @pytest.mark.parametrize("name", sorted(PAYLOADS))
    def test_payload_round_trips_exactly(
        self, queue_engine: ObservationQueueEngine, name: str
    ) -> None:
        """A payload comes back exactly as enqueued: same types, same characters."""
        payload = PAYLOADS[name]
        queue_engine.enqueue("s1", CS, PendingMessage("observation", "t1", payload, 1763800000123))
        msg = drain(queue_engine, "s1", 1)[0]
        assert _exact(msg.payload) == _exact(payload), (
            f"payload changed: {_exact(msg.payload)[:200]}"
        )
        assert msg.tool_use_id == "t1" and msg.kind == "observation"
        assert msg.content_session_id == CS and msg.session_id == "s1"

    @guarantee("P10")
    def test_timestamps_and_kinds_round_trip(self, queue_engine: ObservationQueueEngine) -> None:
        """original_timestamp (ms) and kind come back exactly, at the edges of their range."""
        for i, ts in enumerate(TIMESTAMPS):
            kind = "summarize" if i % 2 else "observation"
            queue_engine.enqueue("s1", CS, PendingMessage(kind, None, {"key": str(i)}, ts))  # type: ignore[arg-type]
        got = drain(queue_engine, "s1", len(TIMESTAMPS))
        stamps = [m.original_timestamp for m in got]
        assert stamps == TIMESTAMPS, f"timestamps changed: {stamps}"
        assert [m.kind for m in got] == ["observation", "summarize"] * 2
        assert all(type(m.original_timestamp) is int for m in got)

    @guarantee("P10", Capability.DURABLE_PROCESSING)
    def test_payload_and_timestamp_survive_reopen(
        self, obsqueue_engine_spec: EngineSpec, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given the engine closed and reopened, every payload and timestamp is unchanged."""
        names = sorted(PAYLOADS)
        for i, name in enumerate(names):
            queue_engine.enqueue(
                "s1",
                CS,
                PendingMessage(
                    "observation", None, PAYLOADS[name], TIMESTAMPS[i % len(TIMESTAMPS)]
                ),
            )
        queue_engine.close()
        with obsqueue_engine_spec.open() as reopened:
            got = drain(reopened, "s1", len(names))
            assert [_exact(m.payload) for m in got] == [_exact(PAYLOADS[n]) for n in names]
            assert [m.original_timestamp for m in got] == [
                TIMESTAMPS[i % len(TIMESTAMPS)] for i in range(len(names))
            ]


class TestDepth:
    @guarantee("P11")
    def test_counts_match_the_oracle_at_quiescence(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given enqueues, acks, a dead message and a claim, the counts match the stored rows."""
        for i in range(6):
            queue_engine.enqueue("s1", CS, keyed(f"s1-{i}"))
        for i in range(3):
            queue_engine.enqueue("s2", CS, keyed(f"s2-{i}"))
        drain(queue_engine, "s1", 2)
        dead = queue_engine.claim_next("s2")
        assert dead is not None
        queue_engine.mark_failed(dead, "poison", retry=False)
        assert queue_engine.claim_next("s1") is not None  # in flight counts as queued
        raw = queue_engine.inspect_raw()
        live = [m for m in raw if m.status != "dead"]
        assert (
            queue_engine.get_pending_count("s1") == sum(m.session_id == "s1" for m in live) == 4
        ), "get_pending_count('s1') does not match the stored rows"
        assert queue_engine.get_pending_count("s2") == sum(m.session_id == "s2" for m in live) == 2
        assert queue_engine.get_pending_count("nobody") == 0
        assert queue_engine.get_total_queue_depth() == len(live) == 6

    @guarantee("P11")
    def test_counts_never_go_negative_under_concurrent_clear_and_ack(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given consumers acking while another thread clears and resets, counts stay >= 0 and
        end at zero."""
        for i in range(100):
            queue_engine.enqueue(f"s{i % 4}", CS, keyed(f"m{i}"))
        seen: list[int] = []
        stop = threading.Event()

        def consume(session: str) -> None:
            for msg in queue_engine.create_iterator(session, stop=stop, idle_timeout=1.0):
                try:
                    queue_engine.mark_processed(msg)
                except Exception:  # a reset may have voided the claim: that is allowed here
                    continue

        def meddle() -> None:
            while not stop.is_set():
                seen.append(queue_engine.get_total_queue_depth())
                seen.extend(queue_engine.get_pending_count(f"s{i}") for i in range(4))
                queue_engine.clear_pending_for_session("s3")
                queue_engine.reset_processing_to_pending("s2")
                stop.wait(0.005)

        threads = [threading.Thread(target=consume, args=(f"s{i}",), daemon=True) for i in range(4)]
        meddler = threading.Thread(target=meddle, daemon=True)
        for t in [*threads, meddler]:
            t.start()
        for t in threads:
            t.join(timeout=60)
        stop.set()
        meddler.join(timeout=10)
        assert min(seen) >= 0
        assert queue_engine.get_total_queue_depth() == 0
        assert all(queue_engine.get_pending_count(f"s{i}") == 0 for i in range(4))


class TestClear:
    @guarantee("P12")
    def test_clear_removes_exactly_that_sessions_pending(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given two sessions with pending messages, clearing one removes its messages only and
        returns how many."""
        for i in range(4):
            queue_engine.enqueue("s1", CS, keyed(f"s1-{i}"))
            queue_engine.enqueue("s2", CS, keyed(f"s2-{i}"))
        cleared = queue_engine.clear_pending_for_session("s1")
        assert cleared == 4, f"clear_pending_for_session('s1') removed {cleared}, not 4"
        assert queue_engine.get_pending_count("s1") == 0
        assert sorted(key_of(m) for m in queue_engine.inspect_raw()) == [
            f"s2-{i}" for i in range(4)
        ]
        assert queue_engine.clear_pending_for_session("s1") == 0

    @guarantee("P12")
    def test_clear_keeps_the_message_in_flight(self, queue_engine: ObservationQueueEngine) -> None:
        """Given the head in flight, clear removes the others; the in-flight one still acks."""
        for i in range(3):
            queue_engine.enqueue("s1", CS, keyed(f"m{i}"))
        held = queue_engine.claim_next("s1")
        assert held is not None
        assert queue_engine.clear_pending_for_session("s1") == 2
        assert [key_of(m) for m in queue_engine.inspect_raw()] == ["m0"]
        queue_engine.mark_processed(held)
        assert queue_engine.get_total_queue_depth() == 0

    @guarantee("P12", Capability.DEDUPE)
    def test_cleared_key_can_be_enqueued_again(self, queue_engine: ObservationQueueEngine) -> None:
        """A cleared message no longer holds its dedupe key."""
        queue_engine.enqueue("s1", CS, keyed("a", "t1"))
        assert queue_engine.clear_pending_for_session("s1") == 1
        assert queue_engine.enqueue("s1", CS, keyed("b", "t1")).duplicate is False
