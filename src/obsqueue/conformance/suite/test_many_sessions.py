"""The many-session iterator (``create_multi_session_iterator``): one consumer serving many
sessions keeps P1 and P2 per session, ends on stop and idle (P13), and refuses bad input (P14)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from obsqueue.conformance.faults import start_child
from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import (
    CS,
    check,
    drain_many,
    guarantee,
    key_of,
    keyed,
    wait_until,
)
from obsqueue.engines.base import Capability, ObservationQueueEngine, PendingMessageWithId
from obsqueue.errors import InvalidMessageError

__all__ = [
    "TestManySessionsBadInput",
    "TestManySessionsExclusive",
    "TestManySessionsOrder",
    "TestManySessionsStop",
]


def _by_session(msgs: list[PendingMessageWithId]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for msg in msgs:
        out.setdefault(msg.session_id, []).append(key_of(msg))
    return out


class TestManySessionsOrder:
    @guarantee("P1")
    def test_each_session_keeps_its_order_through_one_consumer(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given enqueues interleaved over five sessions, one many-session iterator delivers
        all of them, each session in its enqueue order."""
        sessions = [f"s{i}" for i in range(5)]
        for i in range(12):
            for s in sessions:
                queue_engine.enqueue(s, CS, keyed(f"{s}-{i}"))
        got = drain_many(queue_engine, sessions, 60)
        assert len(got) == 60, f"delivered {len(got)} of 60"
        for s, keys in _by_session(got).items():
            assert keys == [f"{s}-{i}" for i in range(12)], f"session {s} out of order: {keys}"

    @guarantee("P1")
    def test_every_session_mode_serves_sessions_that_appear_later(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given an iterator over every session (None) started on an empty queue, messages of
        sessions first seen after it started are delivered, each session in order."""
        got: list[PendingMessageWithId] = []
        done = threading.Thread(
            target=lambda: got.extend(drain_many(queue_engine, None, 9)), daemon=True
        )
        done.start()
        time.sleep(0.3)
        for i in range(3):
            for s in ("late-a", "late-b", "late-c"):
                queue_engine.enqueue(s, CS, keyed(f"{s}-{i}"))
        done.join(25)
        assert len(got) == 9, f"delivered {len(got)} of 9: {_by_session(got)}"
        for s, keys in _by_session(got).items():
            assert keys == [f"{s}-{i}" for i in range(3)], f"session {s} out of order: {keys}"

    @guarantee("P1", Capability.MULTI_PROCESS, Capability.EXCLUSIVE_SESSION)
    def test_two_many_session_consumer_processes_keep_every_session_s_order(
        self,
        obsqueue_engine_spec: EngineSpec,
        queue_engine: ObservationQueueEngine,
        tmp_path: Path,
    ) -> None:
        """Given two consumer processes, each serving the same four sessions with one
        many-session iterator, and a producer process, the history shows no skip, no
        non-monotonic delivery, no overlap within a session and nothing lost."""
        history = tmp_path / "history"
        stop_file = tmp_path / "stop"
        sessions = ["s1", "s2", "s3", "s4"]
        with contextlib.ExitStack() as children:
            consumers = [
                children.enter_context(
                    start_child(
                        "consume",
                        obsqueue_engine_spec,
                        history,
                        f"consumer-{n}",
                        sessions=sessions,
                        many=True,
                        stop_file=str(stop_file),
                    )
                )
                for n in (1, 2)
            ]
            for consumer in consumers:
                consumer.expect("ready")
            with start_child(
                "produce",
                obsqueue_engine_spec,
                history,
                "producer-1",
                sessions=sessions,
                count=25,
                key_prefix="p1",
            ) as producer:
                producer.expect("done", timeout_s=60)
            drained = wait_until(lambda: queue_engine.get_total_queue_depth() == 0, 30)
            stop_file.touch()
            for consumer in consumers:
                consumer.expect("done")
        result = check(history, queue_engine)
        assert drained, f"queue did not drain: depth {queue_engine.get_total_queue_depth()}"
        assert result.messages == 100
        assert result.valid(), result.to_json()


class TestManySessionsExclusive:
    @guarantee("P2")
    def test_a_session_s_next_message_waits_for_the_one_in_flight(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given three messages in each of two sessions and a consumer that acknowledges
        nothing, the many-session iterator yields one message per session and then nothing."""
        for i in range(3):
            for s in ("s1", "s2"):
                queue_engine.enqueue(s, CS, keyed(f"{s}-{i}"))
        got = drain_many(queue_engine, ["s1", "s2"], 6, ack=False, idle_s=1.5)
        assert sorted(key_of(m) for m in got) == ["s1-0", "s2-0"], (
            f"with nothing acknowledged the iterator yielded {[key_of(m) for m in got]}: "
            "a second message of a session while its first was in flight"
        )

    @guarantee("P2")
    def test_only_the_sessions_asked_for_are_served(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given messages in s1, s2 and s3, an iterator over s1 and s2 never yields s3's."""
        for s in ("s1", "s2", "s3"):
            queue_engine.enqueue(s, CS, keyed(f"{s}-a"))
        got = drain_many(queue_engine, ["s1", "s2"], 3, idle_s=1.5)
        assert sorted(key_of(m) for m in got) == ["s1-a", "s2-a"]
        assert queue_engine.get_pending_count("s3") == 1

    @guarantee("P2")
    def test_a_busy_session_does_not_starve_a_quiet_one(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given a session with 30 messages and then one message in another, the quiet
        session's message is among the first four delivered: sessions are served in turn."""
        for i in range(30):
            queue_engine.enqueue("busy", CS, keyed(f"busy-{i}"))
        queue_engine.enqueue("quiet", CS, keyed("quiet-0"))
        got = [key_of(m) for m in drain_many(queue_engine, ["busy", "quiet"], 31)]
        assert "quiet-0" in got[:4], f"the quiet session waited: delivered {got[:8]}..."
        assert [k for k in got if k.startswith("busy")] == [f"busy-{i}" for i in range(30)]

    @guarantee("P2")
    def test_heads_held_and_not_yielded_are_given_back_when_the_iterator_ends(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given one message in each of six sessions and an iterator ended after its first
        message, every other session's message can be claimed at once, as its first attempt:
        heads the iterator claimed ahead are given back, not left to their lease."""
        sessions = [f"s{i}" for i in range(6)]
        for s in sessions:
            queue_engine.enqueue(s, CS, keyed(f"{s}-a"))
        first = drain_many(queue_engine, sessions, 1)
        assert len(first) == 1
        rest = [s for s in sessions if s != first[0].session_id]
        for s in rest:
            msg = queue_engine.claim_next(s)
            assert msg is not None, f"{s}'s head is still held by an ended iterator"
            assert msg.attempt == 1, f"{s}'s head came back as attempt {msg.attempt}"
            queue_engine.mark_processed(msg)


class TestManySessionsStop:
    @guarantee("P13")
    def test_stop_ends_the_iterator_and_idle_timeout_calls_back(
        self, queue_engine: ObservationQueueEngine
    ) -> None:
        """Given an idle many-session iterator, ``stop`` ends it within a second; another,
        with ``idle_timeout``, calls ``on_idle_timeout`` once and ends."""
        stop = threading.Event()
        ended = threading.Event()

        def run() -> None:
            for _ in queue_engine.create_multi_session_iterator(["s1", "s2"], stop=stop):
                pass
            ended.set()

        threading.Thread(target=run, daemon=True).start()
        time.sleep(0.3)
        stop.set()
        assert ended.wait(1.0), "the many-session iterator did not end within 1 s of stop"
        calls: list[float] = []
        started = time.monotonic()
        for _ in queue_engine.create_multi_session_iterator(
            None, idle_timeout=0.5, on_idle_timeout=lambda: calls.append(time.monotonic())
        ):
            pass
        assert len(calls) == 1, f"on_idle_timeout called {len(calls)} times"
        assert calls[0] - started < 3.0


class TestManySessionsBadInput:
    @guarantee("P14")
    @pytest.mark.parametrize(
        ("session_ids", "why"),
        [("s1", "one id"), ([], "is empty"), (["ok", ""], "session_id")],
        ids=["a-string", "empty", "a-bad-id"],
    )
    def test_bad_session_sets_are_refused(
        self, queue_engine: ObservationQueueEngine, session_ids: object, why: str
    ) -> None:
        """Given a string, an empty set or a bad id instead of a set of session ids, the
        iterator is refused with InvalidMessageError before anything is claimed."""
        queue_engine.enqueue("s1", CS, keyed("kept"))
        with pytest.raises(InvalidMessageError, match=why):
            queue_engine.create_multi_session_iterator(session_ids)  # type: ignore[arg-type]
        assert queue_engine.get_pending_count("s1") == 1
