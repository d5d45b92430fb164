"""The cost of one call, per engine: ``enqueue``, a claim + ack round (``claim_next`` then
``mark_processed``), and ``get_pending_count`` over a session with 100 pending messages."""

from __future__ import annotations

import time
from typing import Any

from obsqueue.engines.base import ObservationQueueEngine, PendingMessage, PendingMessageWithId

PAYLOAD = {"tool": "Read", "input": {"path": "src/app.py"}, "output": "x" * 200}
ROUNDS = 200
CLAIM_WAIT_S = 5.0


def _message() -> PendingMessage:
    return PendingMessage(kind="observation", payload=PAYLOAD)


def _claim(engine: ObservationQueueEngine, session_id: str) -> PendingMessageWithId:
    """``claim_next``, asked again while an engine with asynchronous visibility (a broker's
    delivery) has not made the message claimable yet; that wait is part of the cost."""
    deadline = time.monotonic() + CLAIM_WAIT_S
    while (msg := engine.claim_next(session_id)) is None:
        assert time.monotonic() < deadline, "an enqueued message never became claimable"
    return msg


def test_enqueue(benchmark: Any, engine: ObservationQueueEngine, session_id: str) -> None:
    result = benchmark(engine.enqueue, session_id, "content-1", _message())
    assert not result.duplicate
    assert engine.get_pending_count(session_id) >= 1


def test_claim_and_ack(benchmark: Any, engine: ObservationQueueEngine, session_id: str) -> None:
    def one_pending() -> None:
        engine.enqueue(session_id, "content-1", _message())

    def claim_and_ack() -> None:
        engine.mark_processed(_claim(engine, session_id))

    benchmark.pedantic(claim_and_ack, setup=one_pending, rounds=ROUNDS, warmup_rounds=5)
    assert engine.get_pending_count(session_id) == 0


def test_get_pending_count(benchmark: Any, engine: ObservationQueueEngine, session_id: str) -> None:
    engine.enqueue_many([(session_id, "content-1", _message()) for _ in range(100)])
    assert benchmark(engine.get_pending_count, session_id) == 100
