"""P3 dedupe on (content_session_id, tool_use_id) while pending or in flight."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from obsqueue.conformance.faults import start_child
from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import CS, guarantee, keyed, raw_keys
from obsqueue.engines.base import Capability, EnqueueResult, ObservationQueueEngine

__all__ = ["TestDedupe"]


class TestDedupe:
    @guarantee("P3")
    def test_duplicate_while_pending_returns_first_id(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given a pending message with tool_use_id t1, enqueueing t1 again returns its id,
        duplicate=True, and adds nothing."""
        first = queue_engine.enqueue("s1", CS, keyed("a", "t1"))
        again = queue_engine.enqueue("s1", CS, keyed("a-again", "t1"))
        assert again == EnqueueResult(first.message_id, duplicate=True), f"not a duplicate: {again}"
        assert first.duplicate is False
        assert raw_keys(queue_engine) == ["a"]
        assert queue_engine.get_pending_count("s1") == 1

    @guarantee("P3")
    def test_duplicate_while_in_flight_returns_first_id(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given the message with t1 in flight, enqueueing t1 again is a duplicate."""
        first = queue_engine.enqueue("s1", CS, keyed("a", "t1"))
        assert queue_engine.claim_next("s1") is not None
        again = queue_engine.enqueue("s1", CS, keyed("a-again", "t1"))
        assert again == EnqueueResult(first.message_id, duplicate=True)
        assert raw_keys(queue_engine) == ["a"]

    @guarantee("P3")
    def test_key_is_free_again_after_processing(self, queue_engine: ObservationQueueEngine) -> None:
        """Given t1 processed, a new enqueue of t1 is a new message."""
        first = queue_engine.enqueue("s1", CS, keyed("a", "t1"))
        msg = queue_engine.claim_next("s1")
        assert msg is not None
        queue_engine.mark_processed(msg)
        again = queue_engine.enqueue("s1", CS, keyed("b", "t1"))
        assert again.duplicate is False
        assert again.message_id != first.message_id

    @guarantee("P3")
    def test_enqueue_many_dedupes_within_the_batch_and_against_the_queue(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """``enqueue_many`` (which an engine may store in one transaction or pipeline) dedupes
        as single enqueues do: against a queued message, and a later item against an earlier
        one of the same batch; the new items keep their order."""
        queued = queue_engine.enqueue("s1", CS, keyed("a", "t1"))
        items = [("s1", CS, keyed(k, t)) for k, t in [("b", "t2"), ("a2", "t1"), ("b2", "t2")]]
        results = queue_engine.enqueue_many([*items, ("s1", CS, keyed("c"))])
        assert [r.duplicate for r in results] == [False, True, True, False], results
        assert results[1].message_id == queued.message_id
        assert results[2].message_id == results[0].message_id
        assert results[0].message_id < results[3].message_id
        assert raw_keys(queue_engine) == ["a", "b", "c"]

    @guarantee("P3")
    def test_messages_without_tool_use_id_are_never_deduped(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given identical messages without tool_use_id, each is stored."""
        results = [queue_engine.enqueue("s1", CS, keyed("same")) for _ in range(3)]
        assert [r.duplicate for r in results] == [False, False, False]
        assert len({r.message_id for r in results}) == 3
        assert queue_engine.get_pending_count("s1") == 3

    @guarantee("P3")
    def test_same_tool_use_id_in_other_content_session_is_new(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Dedupe is scoped by content_session_id."""
        queue_engine.enqueue("s1", "content-A", keyed("a", "t1"))
        other = queue_engine.enqueue("s1", "content-B", keyed("b", "t1"))
        assert other.duplicate is False
        assert sorted(raw_keys(queue_engine)) == ["a", "b"]

    @guarantee("P3")
    def test_same_key_from_another_session_is_a_duplicate(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Dedupe is keyed on (content_session_id, tool_use_id), not on session_id: the same
        key enqueued under another session id is a duplicate of the first."""
        first = queue_engine.enqueue("s1", CS, keyed("a", "t1"))
        again = queue_engine.enqueue("s2", CS, keyed("a-again", "t1"))
        assert again == EnqueueResult(first.message_id, duplicate=True), (
            f"same (content_session_id, tool_use_id) from session s2 was stored anew: {again}"
        )
        assert raw_keys(queue_engine) == ["a"]

    @guarantee("P3")
    def test_racing_threads_exactly_one_wins(self, queue_engine: ObservationQueueEngine) -> None:
        """Given 8 threads enqueueing the same key at once, one wins and 7 see its id."""
        results: list[EnqueueResult] = []
        barrier = threading.Barrier(8)

        def race(i: int) -> None:
            barrier.wait()
            results.append(queue_engine.enqueue("s1", CS, keyed(f"r{i}", "t-race")))

        threads = [threading.Thread(target=race, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        winners = [r for r in results if not r.duplicate]
        assert len(results) == 8
        assert len(winners) == 1
        assert {r.message_id for r in results} == {winners[0].message_id}
        assert len(queue_engine.inspect_raw()) == 1

    @guarantee("P3", Capability.MULTI_PROCESS)
    def test_racing_processes_exactly_one_wins(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
    ) -> None:
        """Given 4 processes enqueueing the same key at the same instant, exactly one wins."""
        start_at = time.time() + 3.0
        children = [
            start_child(
                "enqueue_once",
                obsqueue_engine_spec,
                tmp_path / "h",
                f"racer-{i}",
                session="s1",
                content_session=CS,
                tool_use_id="t-race",
                key=f"r{i}",
                start_at=start_at,
            )
            for i in range(4)
        ]
        try:
            results = [c.expect("result", timeout_s=60) for c in children]
        finally:
            for c in children:
                c.__exit__()
        winners = [r for r in results if not r["duplicate"]]
        assert len(winners) == 1, results
        assert {r["message_id"] for r in results} == {winners[0]["message_id"]}
        assert len(queue_engine.inspect_raw()) == 1
