"""P1 per-session FIFO and P2 one consumer per session."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from obsqueue.conformance.faults import ChildError, announcing_consumer, start_child
from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import CS, check, drain, guarantee, key_of, keyed
from obsqueue.engines.base import Capability, ObservationQueueEngine, PendingMessage

#: The retry backoff of the backoff test: long enough to see a message overtake the head.
BACKOFF_S = 0.6
#: How long a waiting consumer may take to receive a session another consumer is done with.
HANDOVER_S = 10.0

__all__ = ["TestExclusiveSession", "TestFifo"]


class TestFifo:
    @guarantee("P1")
    def test_one_session_is_delivered_in_enqueue_order(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given 40 messages enqueued to one session, the iterator yields them in that order."""
        keys = [f"m{i}" for i in range(40)]
        for key in keys:
            queue_engine.enqueue("s1", CS, keyed(key))
        got = [key_of(m) for m in drain(queue_engine, "s1", len(keys))]
        assert got == keys, f"delivered out of enqueue order: {got[:5]}..."

    @guarantee("P1")
    def test_interleaved_sessions_each_keep_their_order(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given enqueues interleaved over three sessions, each session drains in its order."""
        sessions: list[str | int] = ["a", "b", 7]
        for i in range(15):
            for s in sessions:
                queue_engine.enqueue(s, CS, keyed(f"{s}-{i}"))
        for s in sessions:
            got = [key_of(m) for m in drain(queue_engine, str(s), 15)]
            assert got == [f"{s}-{i}" for i in range(15)]

    @guarantee("P1", Capability.BOUNDED_RETRIES)
    def test_retried_message_comes_before_later_ones(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given a head that failed with retry, the next delivery is that head, not the next one."""
        for key in ("first", "second"):
            queue_engine.enqueue("s1", CS, keyed(key))
        head = drain(queue_engine, "s1", 1, ack=False)[0]
        queue_engine.mark_failed(head, "transient", retry=True)
        again = drain(queue_engine, "s1", 2)
        assert [key_of(m) for m in again] == ["first", "second"]
        assert again[0].attempt == 2

    @guarantee("P1")
    def test_order_is_enqueue_order_not_timestamp_order(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given messages whose original_timestamp runs backwards, they come in enqueue order:
        the producer's timestamp is data, not a sort key."""
        for i in range(6):
            message = PendingMessage("observation", None, {"key": f"m{i}"}, 1763800000000 - i)
            queue_engine.enqueue("s1", CS, message)
        got = [key_of(m) for m in drain(queue_engine, "s1", 6)]
        assert got == [f"m{i}" for i in range(6)], f"delivered {got}, not in enqueue order"

    @guarantee("P1", Capability.BOUNDED_RETRIES)
    def test_session_waits_out_its_heads_retry_backoff(
        self, obsqueue_engine_spec: EngineSpec
    ) -> None:
        """Given a head that failed with retry and a real backoff, nothing of its session is
        delivered while the head waits; then the head comes back first, then the rest."""
        with obsqueue_engine_spec.open(retry_backoff_s=BACKOFF_S) as engine:
            for key in ("head", "next"):
                engine.enqueue("s1", CS, keyed(key))
            head = engine.claim_next("s1")
            assert head is not None and key_of(head) == "head"
            failed_at = time.monotonic()
            engine.mark_failed(head, "transient", retry=True)
            during = engine.claim_next("s1")
            waited = time.monotonic() - failed_at
            assert during is None or key_of(during) == "head", (
                f"{key_of(during)!r} delivered {waited:.3f} s into the head's retry backoff: "
                "FIFO broken during backoff"
            )
            if during is not None:
                engine.mark_processed(during)
            rest = [key_of(m) for m in drain(engine, "s1", 2 if during is None else 1)]
            assert rest == (["head", "next"] if during is None else ["next"])
            engine.destroy()

    @guarantee("P1", Capability.MULTI_PROCESS)
    def test_producer_and_consumer_processes_keep_order(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
    ) -> None:
        """Given a producer process and a consumer process per pair of sessions running at once,
        the history shows no skip and no non-monotonic delivery in any session."""
        history = tmp_path / "history"
        stop_file = tmp_path / "stop"
        sessions = ["s1", "s2", "s3"]
        with (
            start_child(
                "consume",
                obsqueue_engine_spec,
                history,
                "consumer-1",
                sessions=sessions,
                stop_file=str(stop_file),
            ) as consumer,
            start_child(
                "produce",
                obsqueue_engine_spec,
                history,
                "producer-1",
                sessions=sessions,
                count=40,
                key_prefix="p1",
            ) as producer,
        ):
            consumer.expect("ready")
            producer.expect("done", timeout_s=60)
            drained = _wait_empty(queue_engine, timeout_s=30)
            stop_file.touch()
            consumer.expect("done")
        result = check(history, queue_engine)
        assert drained, f"queue did not drain: depth {queue_engine.get_total_queue_depth()}"
        assert result.messages == 120
        assert result.valid(), result.to_json()


def _wait_empty(engine: ObservationQueueEngine, timeout_s: float) -> bool:
    from obsqueue.conformance.suite.scenarios import wait_until

    return wait_until(lambda: engine.get_total_queue_depth() == 0, timeout_s)


class TestExclusiveSession:
    @guarantee("P2")
    def test_busy_session_gives_no_second_message(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given one message of a session in flight, a second claim on it gets nothing."""
        for key in ("a", "b"):
            queue_engine.enqueue("s1", CS, keyed(key))
        first = queue_engine.claim_next("s1", consumer_id="one")
        assert first is not None
        second = queue_engine.claim_next("s1", consumer_id="two")
        assert second is None, f"second claim while the session is busy: {key_of(second)}"
        queue_engine.mark_processed(first)
        second = queue_engine.claim_next("s1", consumer_id="two")
        assert second is not None
        assert key_of(second) == "b"

    @guarantee("P2")
    def test_busy_session_does_not_hold_up_others(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given session s1 busy, a message of s2 is delivered at once."""
        queue_engine.enqueue("s1", CS, keyed("s1-a"))
        queue_engine.enqueue("s1", CS, keyed("s1-b"))
        queue_engine.enqueue("s2", CS, keyed("s2-a"))
        assert queue_engine.claim_next("s1") is not None
        other = queue_engine.claim_next("s2")
        assert other is not None and key_of(other) == "s2-a"

    @guarantee("P2")
    def test_consumer_is_handed_only_its_own_sessions_messages(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given messages in other sessions only, a consumer of session s1 gets nothing; once
        s1 has one, it gets exactly that one."""
        for s in ("s2", "s3"):
            queue_engine.enqueue(s, CS, keyed(f"{s}-a"))
        stray = queue_engine.claim_next("s1")
        assert stray is None, (
            f"misdelivered: a consumer of s1 was handed {key_of(stray)} of {stray.session_id}"
        )
        queue_engine.enqueue("s1", CS, keyed("s1-a"))
        own = queue_engine.claim_next("s1")
        assert own is not None and (key_of(own), own.session_id) == ("s1-a", "s1")

    @guarantee("P2", Capability.MULTI_PROCESS)
    def test_session_passes_to_a_waiting_consumer_while_the_first_stays_open(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
    ) -> None:
        """Given consumer A that acknowledged a message of s1 and stopped iterating, its engine
        still open, and consumer B waiting on s1 in another process, B gets s1's next message:
        a session is held by a message in flight, not by a consumer that once took one."""
        queue_engine.enqueue("s1", CS, keyed("first"))
        first = drain(queue_engine, "s1", 1)
        assert [key_of(m) for m in first] == ["first"]
        with announcing_consumer(obsqueue_engine_spec, tmp_path, "consumer-b") as b:
            b.expect("ready")
            queue_engine.enqueue("s1", CS, keyed("second"))
            try:
                got = b.expect("delivered", timeout_s=HANDOVER_S)
            except ChildError:
                got = None
            (tmp_path / "stop").touch()
        assert got is not None, (
            f"no hand-over: consumer B got nothing within {HANDOVER_S} s while consumer A, "
            "done with s1 but still open, kept the session"
        )
        assert got["key"] == "second"

    @guarantee("P2")
    def test_racing_threads_never_hold_one_session_together(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given 4 threads claiming one session in a loop, at most one holds a claim at once."""
        total = 60
        for i in range(total):
            queue_engine.enqueue("s1", CS, keyed(f"m{i}"))
        holding = 0
        peak = 0
        done: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            nonlocal holding, peak
            while True:
                with lock:
                    if len(done) >= total:
                        return
                msg = queue_engine.claim_next("s1")
                if msg is None:
                    continue
                with lock:
                    holding += 1
                    peak = max(peak, holding)
                time.sleep(0.002)  # hold the claim a moment, so overlaps are seen
                with lock:
                    holding -= 1
                    done.append(key_of(msg))
                queue_engine.mark_processed(msg)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert peak == 1
        assert done == [f"m{i}" for i in range(total)]

    @guarantee("P2", Capability.MULTI_PROCESS)
    def test_two_consumer_processes_never_hold_one_session_together(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
    ) -> None:
        """Given two consumer processes on the same two sessions, the history shows no overlap
        of claims within a session, and every message is processed once."""
        history = tmp_path / "history"
        stop_file = tmp_path / "stop"
        sessions = ["s1", "s2"]
        for i in range(30):
            for s in sessions:
                queue_engine.enqueue(s, CS, keyed(f"{s}-{i}"))
        _log_preloaded(history, queue_engine)
        config = {"sessions": sessions, "stop_file": str(stop_file), "process_ms": 5}
        with (
            start_child("consume", obsqueue_engine_spec, history, "consumer-1", **config) as c1,
            start_child("consume", obsqueue_engine_spec, history, "consumer-2", **config) as c2,
        ):
            c1.expect("ready")
            c2.expect("ready")
            drained = _wait_empty(queue_engine, timeout_s=60)
            stop_file.touch()
            c1.expect("done")
            c2.expect("done")
        result = check(history, queue_engine)
        assert drained
        assert result.counts["concurrent"] == 0, result.to_json()
        assert result.valid(), result.to_json()


def _log_preloaded(history: Path, engine: ObservationQueueEngine) -> None:
    """Record messages the test enqueued itself as completed enqueues, so the checker knows
    them (in id order, which is their enqueue order)."""
    from obsqueue.conformance.history import HistoryWriter

    writer = HistoryWriter(history, "preload")
    for m in engine.inspect_raw():
        op = writer.invoke(
            "enqueue", {"session": m.session_id, "key": key_of(m), "tool_use_id": m.tool_use_id}
        )
        writer.ok(op, "enqueue", {"message_id": m.id, "duplicate": False})
    writer.close()
