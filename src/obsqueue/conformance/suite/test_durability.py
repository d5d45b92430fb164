"""P4 durable enqueue and P5 durable processing across SIGKILL of client processes and reopen.
(Server kill -9 and restart: ``test_server_faults``.)"""

from __future__ import annotations

import random
import time
from pathlib import Path

from obsqueue.conformance.faults import claim_holder, start_child
from obsqueue.conformance.plugin import Recorder
from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import (
    CS,
    check,
    drain,
    guarantee,
    key_of,
    keyed,
    raw_keys,
    wait_until,
)
from obsqueue.conformance.suite.test_order import _log_preloaded
from obsqueue.engines.base import Capability, ObservationQueueEngine

__all__ = ["TestDurableEnqueue", "TestDurableProcessing"]

#: The lease of the consumer killed right after its ack: longer than the test, so a lost ack
#: shows as a message still in flight rather than one delivered again.
LEASE_AFTER_ACK_S = 60.0


class TestDurableEnqueue:
    @guarantee("P4", Capability.MULTI_PROCESS)
    def test_enqueues_survive_sigkill_of_the_producer(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
        obsqueue_record: Recorder,
    ) -> None:
        """Given a producer process SIGKILLed at a random point mid-stream, every enqueue that
        returned is in the backend (read by the backdoor oracle), in order."""
        history = tmp_path / "history"
        with start_child(
            "produce",
            obsqueue_engine_spec,
            history,
            "producer-1",
            sessions=["s1", "s2"],
            count=5000,
            key_prefix="p",
        ) as producer:
            producer.expect("enqueued", timeout_s=60)
            time.sleep(random.uniform(0.3, 1.0))
            producer.sigkill()
        result = check(history, queue_engine)
        obsqueue_record.anomalies(result.anomalies())
        assert result.messages > 0, "the producer was killed before it enqueued anything"
        assert result.counts["lost"] == 0, f"lost acknowledged enqueues: {result.to_json()}"
        assert result.counts["unexpected"] == 0, result.to_json()
        for session in ("s1", "s2"):
            stored = [k for k in raw_keys(queue_engine) if k.startswith(f"p-{session}-")]
            got = [key_of(m) for m in drain(queue_engine, session, len(stored), timeout_s=30)]
            assert got == sorted(stored, key=_index), (
                f"{session}: the backlog left by the killed producer came out of enqueue "
                f"order: {got[:10]}..."
            )


def _index(key: str) -> int:
    """``p-s1-17`` -> 17: a producer key's place in its session's enqueue order."""
    return int(key.rsplit("-", 1)[1])


class TestDurableProcessing:
    @guarantee("P5")
    def test_processed_messages_stay_processed_after_reopen(
        self, obsqueue_engine_spec: EngineSpec, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given 3 of 5 messages processed and the engine closed, a new engine object on the
        same store delivers only the other 2."""
        for i in range(5):
            queue_engine.enqueue("s1", CS, keyed(f"m{i}"))
        assert len(drain(queue_engine, "s1", 3)) == 3
        queue_engine.close()
        with obsqueue_engine_spec.open() as reopened:
            rest = [key_of(m) for m in drain(reopened, "s1", 5, timeout_s=1.5)]
            assert rest == ["m3", "m4"], f"after reopen: {rest}, not the 2 unprocessed"

    @guarantee("P5", Capability.MULTI_PROCESS)
    def test_ack_survives_sigkill_right_after_it_returns(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
    ) -> None:
        """Given a consumer process SIGKILLed the moment mark_processed returned in it, the
        acknowledged message is gone from the backend (backdoor oracle) and never delivered
        again; the next one is. No restart or reset is needed to see it."""
        for key in ("acked", "next"):
            queue_engine.enqueue("s1", CS, keyed(key))
        with claim_holder(
            obsqueue_engine_spec, tmp_path, LEASE_AFTER_ACK_S, "consumer"
        ) as consumer:
            assert consumer.expect("claimed")["key"] == "acked"
            consumer.send("ack")
            assert consumer.expect("result")["outcome"] == "ok"
            consumer.sigkill()
        live = [
            m for m in queue_engine.inspect_raw() if key_of(m) == "acked" and m.status != "dead"
        ]
        assert not live, (
            f"ack lost: mark_processed returned, the process died, and the message is stored "
            f"as {[m.status for m in live]}"
        )
        assert [key_of(m) for m in drain(queue_engine, "s1", 2, timeout_s=3)] == ["next"]

    @guarantee("P5", Capability.MULTI_PROCESS, Capability.STARTUP_RECOVERY)
    def test_acks_survive_sigkill_of_the_consumer(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
        obsqueue_record: Recorder,
    ) -> None:
        """Given a consumer process SIGKILLed mid-stream and a second one started after
        reset_processing_to_pending, no message acknowledged by the first is delivered again
        and none is lost."""
        history = tmp_path / "history"
        for i in range(150):
            for s in ("s1", "s2"):
                queue_engine.enqueue(s, CS, keyed(f"{s}-{i}"))
        _log_preloaded(history, queue_engine)
        config = {"sessions": ["s1", "s2"], "stop_file": str(tmp_path / "stop"), "process_ms": 2}
        with start_child("consume", obsqueue_engine_spec, history, "consumer-1", **config) as c1:
            c1.expect("ready")
            time.sleep(random.uniform(0.3, 1.0))
            c1.sigkill()
        queue_engine.reset_processing_to_pending()
        with start_child("consume", obsqueue_engine_spec, history, "consumer-2", **config) as c2:
            c2.expect("ready")
            drained = wait_until(lambda: queue_engine.get_total_queue_depth() == 0, 60)
            (tmp_path / "stop").touch()
            c2.expect("done")
        result = check(history, queue_engine)
        obsqueue_record.anomalies(result.anomalies())
        assert drained
        assert result.counts["duplicated"] == 0, result.to_json()
        assert result.valid(), result.to_json()
