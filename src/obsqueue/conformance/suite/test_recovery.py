"""P6 startup recovery, P7 stall recovery and P8 fencing — with frozen and killed processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from obsqueue.conformance.faults import claim_holder
from obsqueue.conformance.plugin import Recorder
from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import CS, drain, guarantee, key_of, keyed, raw_keys
from obsqueue.engines.base import Capability, ObservationQueueEngine
from obsqueue.errors import StaleClaimError

__all__ = ["TestFencing", "TestStallRecovery", "TestStartupRecovery"]

LEASE_S = 1.0
#: The lease of a holder that stays alive, and how early a take-over may be (clock granularity).
HELD_LEASE_S = 3.0
LEASE_TOLERANCE_S = 0.25


class TestStartupRecovery:
    @guarantee("P6")
    def test_reset_returns_in_flight_message_at_its_place(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given the head in flight, reset moves it back to pending and it is delivered first."""
        for key in ("a", "b", "c"):
            queue_engine.enqueue("s1", CS, keyed(key))
        assert queue_engine.claim_next("s1") is not None
        assert queue_engine.reset_processing_to_pending("s1") == 1
        got = drain(queue_engine, "s1", 3)
        keys = [key_of(m) for m in got]
        assert keys == ["a", "b", "c"], f"the reset message is not at its place: {keys}"
        assert got[0].attempt == 2

    @guarantee("P6")
    def test_reset_of_one_session_leaves_others_in_flight(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """reset_processing_to_pending(s1) touches s1 only; None resets every session."""
        for s in ("s1", "s2"):
            queue_engine.enqueue(s, CS, keyed(s))
        assert queue_engine.claim_next("s1") is not None
        held = queue_engine.claim_next("s2")
        assert held is not None
        assert queue_engine.reset_processing_to_pending("s1") == 1
        assert queue_engine.claim_next("s2") is None
        assert queue_engine.reset_processing_to_pending(None) == 1
        assert queue_engine.reset_processing_to_pending() == 0

    @guarantee("P6", Capability.FENCING)
    def test_reset_voids_the_old_claim(self, queue_engine: ObservationQueueEngine) -> None:
        """Given a claim that was reset, acknowledging under it raises StaleClaimError."""
        queue_engine.enqueue("s1", CS, keyed("a"))
        old = queue_engine.claim_next("s1")
        assert old is not None
        queue_engine.reset_processing_to_pending()
        with pytest.raises(StaleClaimError):
            queue_engine.mark_processed(old)
        assert raw_keys(queue_engine, "pending") == ["a"]

    @guarantee("P6", Capability.MULTI_PROCESS)
    def test_reset_after_consumer_sigkill_keeps_order(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
    ) -> None:
        """Given a consumer process killed while holding the head, a reset at startup returns
        it, and the session drains in enqueue order."""
        for i in range(5):
            queue_engine.enqueue("s1", CS, keyed(f"m{i}"))
        with claim_holder(obsqueue_engine_spec, tmp_path, 300, "holder") as holder:
            claimed = holder.expect("claimed")
            holder.sigkill()
        assert claimed["key"] == "m0"
        assert queue_engine.reset_processing_to_pending() == 1
        assert [key_of(m) for m in drain(queue_engine, "s1", 5)] == [f"m{i}" for i in range(5)]


class TestStallRecovery:
    @guarantee("P7")
    def test_expired_claim_is_delivered_again_with_next_attempt(
        self, queue_engine: ObservationQueueEngine, obsqueue_record: Recorder
    ) -> None:
        """Given a claim left to expire, the message comes again after the lease, attempt 2,
        with no restart of anything."""
        queue_engine.enqueue("s1", CS, keyed("a"))
        first = queue_engine.claim_next("s1", lease_s=LEASE_S)
        assert first is not None and first.attempt == 1
        started = time.monotonic()
        again = drain(queue_engine, "s1", 1, timeout_s=LEASE_S + 10)
        waited = time.monotonic() - started
        obsqueue_record.timing("redelivery_after_lease_s", waited)
        assert [key_of(m) for m in again] == ["a"], "not delivered again after its lease"
        assert again[0].attempt == 2
        assert waited >= LEASE_S * 0.8

    @guarantee("P7")
    def test_extended_lease_is_not_taken_away(self, queue_engine: ObservationQueueEngine) -> None:
        """Given a consumer that extends its lease, the message is not delivered again."""
        queue_engine.enqueue("s1", CS, keyed("a"))
        msg = queue_engine.claim_next("s1", lease_s=LEASE_S)
        assert msg is not None
        for _ in range(3):
            time.sleep(LEASE_S * 0.5)
            queue_engine.extend_lease(msg, LEASE_S)
        assert queue_engine.claim_next("s1") is None
        queue_engine.mark_processed(msg)

    @guarantee("P7", Capability.MULTI_PROCESS)
    def test_message_of_killed_consumer_comes_back_after_lease(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
    ) -> None:
        """Given a consumer process SIGKILLed holding the head, another consumer gets it after
        the lease with attempt 2, then the rest in order."""
        for i in range(3):
            queue_engine.enqueue("s1", CS, keyed(f"m{i}"))
        with claim_holder(obsqueue_engine_spec, tmp_path, LEASE_S, "holder") as holder:
            holder.expect("claimed")
            holder.sigkill()
        got = drain(queue_engine, "s1", 3, timeout_s=LEASE_S + 15)
        assert [key_of(m) for m in got] == ["m0", "m1", "m2"]
        assert got[0].attempt == 2

    @guarantee("P7", Capability.MULTI_PROCESS)
    def test_live_claim_of_another_process_is_not_taken_before_its_lease(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
        obsqueue_record: Recorder,
    ) -> None:
        """Given a consumer process holding the head under a lease of HELD_LEASE_S, another
        process cannot claim it before the lease ends, and can soon after: the lease is measured
        on a clock every process shares."""
        queue_engine.enqueue("s1", CS, keyed("a"))
        time.sleep(1.0)  # this process's engine is older than the holder's
        with claim_holder(obsqueue_engine_spec, tmp_path, HELD_LEASE_S, "holder") as holder:
            holder.expect("claimed")
            # the holder claimed before it said so: its lease ends by then + HELD_LEASE_S
            lease_end_s = time.time() + HELD_LEASE_S
            taken = None
            while taken is None and time.time() < lease_end_s + 10:
                taken = queue_engine.claim_next("s1")
                if taken is None:
                    time.sleep(0.02)
            taken_at = time.time()
            holder.send("exit")
        assert taken is not None, "the message was not delivered again after its lease"
        early_s = lease_end_s - taken_at
        obsqueue_record.timing("taken_over_before_lease_end_s", early_s)
        assert early_s < LEASE_TOLERANCE_S, (
            f"taken over {early_s:.3f} s before the holder's lease ended: leases are measured "
            "on clocks that differ between processes"
        )
        assert taken.attempt == 2


class TestFencing:
    @guarantee("P8")
    def test_ack_under_expired_and_redelivered_claim_raises(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given a claim that expired and was delivered again, acking the old one raises
        StaleClaimError and changes nothing; the new claim still acks."""
        queue_engine.enqueue("s1", CS, keyed("a"))
        old = queue_engine.claim_next("s1", lease_s=0.3)
        assert old is not None
        new = drain(queue_engine, "s1", 1, ack=False, timeout_s=10)[0]
        with pytest.raises(StaleClaimError):
            queue_engine.mark_processed(old)
        assert raw_keys(queue_engine, "processing") == ["a"]
        queue_engine.mark_processed(new)
        assert queue_engine.inspect_raw() == []

    @guarantee("P8")
    def test_fail_under_stale_claim_raises_and_changes_nothing(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """mark_failed under a superseded claim raises StaleClaimError; the row is untouched."""
        queue_engine.enqueue("s1", CS, keyed("a"))
        old = queue_engine.claim_next("s1", lease_s=0.3)
        assert old is not None
        new = drain(queue_engine, "s1", 1, ack=False, timeout_s=10)[0]
        before = queue_engine.inspect_raw()
        with pytest.raises(StaleClaimError):
            queue_engine.mark_failed(old, "late", retry=False)
        with pytest.raises(StaleClaimError):
            queue_engine.extend_lease(old)
        assert queue_engine.inspect_raw() == before
        queue_engine.mark_processed(new)

    @guarantee("P8", Capability.MULTI_PROCESS, Capability.STALL_RECOVERY)
    def test_frozen_consumer_is_fenced_when_it_wakes(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
    ) -> None:
        """Given a consumer process SIGSTOPped past its lease while another took the message
        over, the frozen one's ack after SIGCONT raises StaleClaimError in that process."""
        queue_engine.enqueue("s1", CS, keyed("a"))
        with claim_holder(obsqueue_engine_spec, tmp_path, LEASE_S, "frozen") as frozen:
            frozen.expect("claimed")
            frozen.sigstop()
            new = drain(queue_engine, "s1", 1, ack=False, timeout_s=LEASE_S + 15)[0]
            frozen.sigcont()
            frozen.send("ack")
            outcome = frozen.expect("result")
            frozen.send("exit")
        assert outcome["outcome"] == "StaleClaimError"
        assert new.attempt == 2
        queue_engine.mark_processed(new)
        assert queue_engine.get_pending_count("s1") == 0
