"""Model-based test: the engine and the in-memory reference engine, driven by the same random
operations (Hypothesis stateful testing), must answer alike at every step."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from obsqueue.conformance.spec import EngineSpec
from obsqueue.conformance.suite.scenarios import key_of, keyed
from obsqueue.engines.base import (
    Capability,
    ObservationQueueEngine,
    PendingMessageWithId,
)
from obsqueue.engines.memory import MemoryEngine

__all__ = ["TestModel"]

SESSIONS = st.sampled_from(["a", "b", "c"])
TOOL_IDS = st.sampled_from([None, "t1", "t2", "t3"])
CONTENT = st.sampled_from(["c1", "c2"])
MODEL_OPTIONS = {"lease_s": 600.0, "max_attempts": 3, "retry_backoff_s": 0.0}


def _machine(spec: EngineSpec) -> type[RuleBasedStateMachine]:
    keys = itertools.count()

    class EngineVersusModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.engine: ObservationQueueEngine = spec.open(**MODEL_OPTIONS)
            self.engine.destroy()
            self.model = MemoryEngine("memory://", **MODEL_OPTIONS)
            self.held: dict[str, tuple[PendingMessageWithId, PendingMessageWithId]] = {}
            self.ids: dict[int, int] = {}  # model id -> engine id

        @rule(session=SESSIONS, tool=TOOL_IDS, content=CONTENT)
        def enqueue(self, session: str, tool: str | None, content: str) -> None:
            message = keyed(f"k{next(keys)}", tool)
            want = self.model.enqueue(session, content, message)
            got = self.engine.enqueue(session, content, message)
            assert got.duplicate == want.duplicate, (want, got)
            if want.duplicate:
                assert self.ids[want.message_id] == got.message_id
            else:
                self.ids[want.message_id] = got.message_id

        @rule(session=SESSIONS)
        def claim(self, session: str) -> None:
            want = self.model.claim_next(session)
            got = self.engine.claim_next(session)
            assert (want is None) == (got is None), (want, got)
            if want is not None and got is not None:
                assert key_of(got) == key_of(want) and got.attempt == want.attempt
                self.held[session] = (want, got)

        @rule(session=SESSIONS)
        def ack(self, session: str) -> None:
            if session in self.held:
                want, got = self.held.pop(session)
                self.model.mark_processed(want)
                self.engine.mark_processed(got)

        @rule(session=SESSIONS, retry=st.booleans())
        def fail(self, session: str, retry: bool) -> None:
            if session in self.held:
                want, got = self.held.pop(session)
                self.model.mark_failed(want, "model", retry=retry)
                self.engine.mark_failed(got, "model", retry=retry)

        @rule(session=SESSIONS)
        def clear(self, session: str) -> None:
            assert self.engine.clear_pending_for_session(
                session
            ) == self.model.clear_pending_for_session(session)

        @rule(session=st.one_of(st.none(), SESSIONS))
        def reset(self, session: str | None) -> None:
            assert self.engine.reset_processing_to_pending(
                session
            ) == self.model.reset_processing_to_pending(session)
            self.held = {s: h for s, h in self.held.items() if session not in (None, s)}

        @invariant()
        def counts_match(self) -> None:
            for s in ("a", "b", "c"):
                assert self.engine.get_pending_count(s) == self.model.get_pending_count(s)
            assert self.engine.get_total_queue_depth() == self.model.get_total_queue_depth()

        @invariant()
        def stored_state_matches(self) -> None:
            def view(e: ObservationQueueEngine) -> list[Any]:
                return [(key_of(m), m.session_id, m.status, m.attempt) for m in e.inspect_raw()]

            assert view(self.engine) == view(self.model)

        def teardown(self) -> None:
            self.engine.destroy()
            self.engine.close()
            self.model.close()

    return EngineVersusModel


class TestModel:
    @pytest.mark.obsqueue_property("P1", "P3", "P11", "P12", "P15")
    @pytest.mark.requires(
        Capability.FIFO,
        Capability.DEDUPE,
        Capability.DEPTH,
        Capability.CLEAR,
        Capability.BOUNDED_RETRIES,
        Capability.STARTUP_RECOVERY,
    )
    def test_engine_answers_like_the_model(self, obsqueue_engine_spec: EngineSpec) -> None:
        """Random sequences of enqueue, claim, ack, fail, clear and reset give the same answers,
        counts and stored state on the engine as on the in-memory model."""
        run_state_machine_as_test(
            _machine(obsqueue_engine_spec),
            settings=settings(
                max_examples=15,
                stateful_step_count=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
