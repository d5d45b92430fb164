"""What the harness drives: an obsqueue engine, a raw backend loop (the ceiling) or a peer
library used as its own users would (pgqueuer, procrastinate, RQ, Dramatiq, Huey, BullMQ).

Every one of them is a ``WorkloadTarget``. The harness opens one in each producer and consumer
process (targets are picklable descriptions until ``open`` is called), so one workload file runs
the same way over all of them and their figures share a round.

The payload the harness hands to ``enqueue`` is JSON text that carries the harness's own stamps
(intended send time, sequence number); a target stores and returns it byte for byte and never
parses it. ``consume`` calls ``on_message(session_id, payload)`` once per message *after* the
message is acknowledged in the target's own way — that instant is the "processed" stage. A target
that can tell when a message is handed to its consumer (before the ack) calls
``self.delivered(payload)`` then: that is the "delivered" stage, and the hook the ``recovery``
workload uses to SIGKILL a consumer that holds a message. Targets that do not call it simply
have no "delivered" figures.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["Guarantees", "OnDelivered", "OnMessage", "TargetSession", "WorkloadTarget"]

#: Called by a consumer once per acknowledged message: ``(session_id, payload_text)``.
OnMessage = Callable[[str, str], None]
#: Set by the harness on a session; called with the payload text when a message is delivered.
OnDelivered = Callable[[str], None]


@dataclass(frozen=True)
class Guarantees:
    """What a target holds, recorded beside every figure it produces. A peer library's weaker
    guarantees are the reason its figure is not a like-for-like comparison."""

    per_session_fifo: bool
    one_consumer_per_session: bool
    ack_after_processing: bool  # False: a task is removed when it is handed out (lost on a kill)
    survives_consumer_kill: bool  # the message of a SIGKILLed consumer is delivered again
    dedupe: bool
    notes: tuple[str, ...] = ()

    def weaker_than_obsqueue(self) -> list[str]:
        """The guarantees obsqueue's reference engines hold and this target does not."""
        names = {
            "per_session_fifo": "no per-session order",
            "one_consumer_per_session": "no one-consumer-per-session",
            "ack_after_processing": "no ack (task removed on delivery)",
            "survives_consumer_kill": "task lost on a consumer kill",
            "dedupe": "no dedupe",
        }
        return [text for attr, text in names.items() if not getattr(self, attr)]


class TargetSession(abc.ABC):
    """One process's open connection to a target."""

    #: The harness sets this before ``consume``; targets call ``delivered`` rather than it.
    on_delivered: OnDelivered | None = None

    def delivered(self, payload: str) -> None:
        """Report that ``payload`` was handed to this consumer and is not yet acknowledged."""
        if self.on_delivered is not None:
            self.on_delivered(payload)

    @abc.abstractmethod
    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        """Store one message of ``session_id`` durably (as durably as the target can)."""

    def enqueue_many(self, items: Sequence[tuple[str, str, str | None]]) -> None:
        """Store several ``(session_id, payload, dedupe_key)`` items; override to batch."""
        for session_id, payload, key in items:
            self.enqueue(session_id, payload, key)

    @abc.abstractmethod
    def consume(
        self,
        sessions: Sequence[str] | None,
        on_message: OnMessage,
        stop: threading.Event,
    ) -> None:
        """Drain messages of ``sessions`` (None: every session) until ``stop`` is set, calling
        ``on_message`` after each acknowledgement. Returns within about a second of ``stop``."""

    @abc.abstractmethod
    def pending(self) -> int:
        """Messages stored and not yet acknowledged (the harness waits for 0 to end a round)."""

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release connections; called once per process."""


@dataclass(frozen=True)
class WorkloadTarget(abc.ABC):
    """A picklable description of a target at one address, opened in each worker process."""

    name: ClassVar[str] = ""  # e.g. "pgqueuer", "raw-postgres", "obsqueue"
    kind: ClassVar[str] = ""  # "engine", "ceiling" or "peer"
    backend: ClassVar[str] = ""  # "postgres", "redis", "sqlite", "memory", ...
    guarantees: ClassVar[Guarantees]

    address: str  # a server URL or a file path: where the target stores its messages
    namespace: str = "bench"
    options: dict[str, Any] = field(default_factory=dict)

    @abc.abstractmethod
    def prepare(self) -> None:
        """Create what the target needs (tables, queues) and empty it; run once per round."""

    @abc.abstractmethod
    def open(self) -> TargetSession:
        """Connect from the current process."""

    def cleanup(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Remove what ``prepare`` created; run once after the last round."""

    def describe(self) -> dict[str, Any]:
        """Library versions and the durability settings in force, for the result's identity."""
        return {"name": self.name, "kind": self.kind, "backend": self.backend}
