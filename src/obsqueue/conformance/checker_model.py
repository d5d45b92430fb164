"""The history checker's model: calls paired with their completions, and every message with
its enqueues, deliveries, acks, fails and stored rows, read from a history (see ``checker``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from obsqueue.conformance.history import INFO_TIME_NS, Op

__all__ = [
    "COUNTS",
    "FAILING",
    "INFORMATIVE",
    "MAX_EXAMPLES",
    "NEVER",
    "Call",
    "Delivery",
    "Index",
    "Message",
    "Tally",
    "index_history",
]

#: Anomalies that fail a property unless the engine's capabilities allow them.
FAILING: Final = (
    "lost",
    "unexpected",
    "duplicated",
    "misdelivered",
    "skip",
    "non_monotonic",
    "concurrent",
)
#: Counts that describe a run without failing it.
INFORMATIVE: Final = ("ok", "recovered", "redelivered", "unacked", "cleared")
#: Every key of ``CheckResult.counts``, always present.
COUNTS: Final = (*INFORMATIVE, *FAILING)
#: Examples kept per count.
MAX_EXAMPLES: Final = 5

NEVER: Final = INFO_TIME_NS


@dataclass(frozen=True, slots=True)
class Call:
    invoke: Op
    done: Op | None

    @property
    def outcome(self) -> str:
        return self.done.phase if self.done is not None else "info"

    @property
    def start(self) -> int:
        return self.invoke.time_ns

    @property
    def end(self) -> int:
        """When the call surely had its effect (or none): never, if its outcome is unknown."""
        return self.done.time_ns if self.done and self.outcome != "info" else NEVER

    @property
    def result(self) -> dict[str, Any]:
        return self.done.value if self.done is not None else {}

    def covers(self, session: str | None) -> bool:
        """For reset/clear: does it apply to ``session``?"""
        target = self.invoke.value.get("session")
        return target is None or str(target) == session


@dataclass(slots=True)
class Delivery:
    process: str
    session: str
    key: str
    attempt: int | None
    token: Any
    time_ns: int
    lease_end_ns: int | None
    message_session: str = ""  # the session the engine said the message belongs to
    claim_bound_ns: int = 0  # an upper bound of the claim's time (see the module docstring)


@dataclass(slots=True)
class Message:
    key: str
    enqueues: list[Call] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    acks: list[Call] = field(default_factory=list)
    fails: list[Call] = field(default_factory=list)
    extends: list[Call] = field(default_factory=list)
    stored: list[dict[str, Any]] = field(default_factory=list)

    @property
    def enqueued(self) -> Call | None:
        """The first enqueue that returned ok and added this message."""
        return next(
            (c for c in self.enqueues if c.outcome == "ok" and not c.result.get("duplicate")), None
        )

    @property
    def session(self) -> str:
        enq = self.enqueued or (self.enqueues[0] if self.enqueues else None)
        if enq is not None:
            return str(enq.invoke.value.get("session"))
        if self.deliveries:
            return self.deliveries[0].session
        return str(self.stored[0].get("session")) if self.stored else "?"

    @property
    def statuses(self) -> list[str]:
        return [str(row.get("status")) for row in self.stored]

    @property
    def first_ack_ok(self) -> int:
        return min((c.end for c in self.acks if c.outcome == "ok"), default=NEVER)

    @property
    def last_claim_bound(self) -> int:
        return max((d.claim_bound_ns for d in self.deliveries), default=-1)

    @property
    def first_claim_bound(self) -> int:
        return min((d.claim_bound_ns for d in self.deliveries), default=NEVER)


class Tally:
    """Counts and examples as they are found."""

    def __init__(self, t0: int) -> None:
        self.t0 = t0
        self.counts = dict.fromkeys(COUNTS, 0)
        self.examples: dict[str, list[str]] = {k: [] for k in COUNTS}

    def add(self, kind: str, example: Callable[[], str], n: int = 1) -> None:
        self.counts[kind] += n
        if len(self.examples[kind]) < MAX_EXAMPLES:
            self.examples[kind].append(example())

    def wants_example(self, kind: str) -> bool:
        return len(self.examples[kind]) < MAX_EXAMPLES

    def at(self, t: int) -> str:
        return "never" if t >= NEVER else f"{(t - self.t0) / 1e9:.3f}s"


@dataclass(slots=True)
class Index:
    messages: dict[str, Message]
    clears: list[Call]
    resets: list[Call]


# -- reading the history ---------------------------------------------------------------------


def _calls(ops: list[Op]) -> list[Call]:
    completions = {(op.process, op.op_id): op for op in ops if op.phase != "invoke"}
    return [Call(op, completions.get((op.process, op.op_id))) for op in ops if op.phase == "invoke"]


def _key(value: dict[str, Any]) -> str:
    key = value.get("key")
    return str(key) if key is not None else f"#id:{value.get('message_id')}"


def index_history(ops: list[Op], final: Sequence[dict[str, Any]]) -> Index:
    messages: dict[str, Message] = {}
    index = Index(messages, [], [])

    def message(value: dict[str, Any]) -> Message:
        key = _key(value)
        return messages.setdefault(key, Message(key))

    for call in _calls(ops):
        f, value = call.invoke.f, call.invoke.value
        if f == "deliver":
            message(value).deliveries.append(_delivery(call))
        elif f in ("enqueue", "ack", "fail", "extend"):
            lists = {"enqueue": "enqueues", "ack": "acks", "fail": "fails", "extend": "extends"}
            getattr(message(value), lists[f]).append(call)
        elif f in ("clear", "reset"):
            (index.clears if f == "clear" else index.resets).append(call)
    for row in final:
        message(row).stored.append(row)
    for m in messages.values():
        _bound_claims(m)
    return index


def _delivery(call: Call) -> Delivery:
    value = call.invoke.value
    lease = value.get("lease_expires_at_ms")
    attempt = value.get("attempt")
    return Delivery(
        process=call.invoke.process,
        session=str(value.get("session")),
        message_session=str(value.get("message_session", value.get("session"))),
        key=_key(value),
        attempt=attempt if isinstance(attempt, int) else None,
        token=value.get("token"),
        time_ns=call.start,
        lease_end_ns=lease * 1_000_000 if isinstance(lease, int) else None,
    )


def _bound_claims(m: Message) -> None:
    """Set each delivery's claim bound: logged time, lease end, later attempts' logged times."""
    enqueued_at = min((c.start for c in m.enqueues), default=0)
    for d in m.deliveries:
        bound = d.time_ns
        if d.lease_end_ns is not None and d.lease_end_ns > enqueued_at:  # else: not a real lease
            bound = min(bound, d.lease_end_ns)
        for other in m.deliveries:
            if d.attempt is not None and other.attempt is not None and other.attempt > d.attempt:
                bound = min(bound, other.time_ns)
        d.claim_bound_ns = bound
