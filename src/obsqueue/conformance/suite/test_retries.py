"""P15 bounded retries and the dead state."""

from __future__ import annotations

import time

import pytest

from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import CS, drain, guarantee, key_of, keyed
from obsqueue.engines.base import Capability, ObservationQueueEngine, PendingMessageWithId

__all__ = ["TestBoundedRetries"]


class TestBoundedRetries:
    @guarantee("P15")
    def test_retry_requeues_with_the_next_attempt(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """mark_failed(retry=True) brings the message back with attempt + 1."""
        queue_engine.enqueue("s1", CS, keyed("a"))
        first = drain(queue_engine, "s1", 1, ack=False)[0]
        queue_engine.mark_failed(first, "transient", retry=True)
        second = drain(queue_engine, "s1", 1, ack=False)[0]
        assert (key_of(second), second.attempt) == ("a", 2)
        assert second.id == first.id

    @guarantee("P15")
    def test_message_is_dead_after_max_attempts_and_visible(
        self, obsqueue_engine_spec: EngineSpec
    ) -> None:
        """With max_attempts=3, three failed deliveries make the message dead: kept, visible in
        list_dead, not delivered, not counted; the next message of the session flows."""
        with obsqueue_engine_spec.open(max_attempts=3) as engine:
            engine.enqueue("s1", CS, keyed("poison"))
            engine.enqueue("s1", CS, keyed("next"))
            attempts = []
            for _ in range(3):
                msg = drain(engine, "s1", 1, ack=False)[0]
                assert key_of(msg) == "poison"
                attempts.append(msg.attempt)
                engine.mark_failed(msg, f"boom {msg.attempt}", retry=True)
            assert attempts == [1, 2, 3]
            dead = [key_of(m) for m in engine.list_dead("s1")]
            assert dead == ["poison"], f"not dead after max_attempts: list_dead says {dead}"
            assert engine.get_pending_count("s1") == 1
            assert [key_of(m) for m in drain(engine, "s1", 2, timeout_s=1.5)] == ["next"]
            assert [m.status for m in engine.inspect_raw()] == ["dead"]
            engine.destroy()

    @guarantee("P15")
    def test_fail_without_retry_is_dead_at_once(self, queue_engine: ObservationQueueEngine) -> None:
        queue_engine.enqueue("s1", CS, keyed("a"))
        msg = drain(queue_engine, "s1", 1, ack=False)[0]
        queue_engine.mark_failed(msg, "permanent", retry=False)
        dead = queue_engine.list_dead()
        assert [(key_of(m), m.attempt) for m in dead] == [("a", 1)]
        assert queue_engine.get_total_queue_depth() == 0
        assert drain(queue_engine, "s1", 1, timeout_s=0.8) == []

    @guarantee("P15", Capability.STALL_RECOVERY)
    @pytest.mark.parametrize("max_attempts", [1, 2])
    def test_stalls_count_as_attempts(
        self, obsqueue_engine_spec: EngineSpec, max_attempts: int
    ) -> None:
        """A message whose every delivery stalls past its lease is dead after max_attempts."""
        with obsqueue_engine_spec.open(max_attempts=max_attempts) as engine:
            engine.enqueue("s1", CS, keyed("stuck"))
            for attempt in range(1, max_attempts + 1):
                msg = drain(engine, "s1", 1, ack=False, timeout_s=5)[0]
                assert msg.attempt == attempt
                _expire(engine, msg)
            assert drain(engine, "s1", 1, ack=False, timeout_s=1.0) == []
            assert [key_of(m) for m in engine.list_dead()] == ["stuck"]
            engine.destroy()


def _expire(engine: ObservationQueueEngine, msg: PendingMessageWithId) -> None:
    """Shorten the claim to a moment and wait it out."""
    engine.extend_lease(msg, 0.05)
    time.sleep(0.3)
