"""The glue the Huey adapters (``engines/huey/``) keep beside Huey's storage, in the same backend.

Huey stores each session's pending tasks in a queue named after a Huey instance and removes a task
when it is dequeued. Everything the contract needs beyond that lives here:

* a **slot** per session: one small JSON record holding the message taken out of Huey's queue
  (status, attempt, fencing token, lease, retry time, last error), the id of the last task taken
  (``pop``) with the time until which only its taker may remove it from Huey's queue
  (``pop_until``), ids popped by surprise (``orphans``), a clear lock and a version number;
* the **envelope** (the task's argument, as JSON) of every message held by a slot or dead;
* **dead** messages (kept, visible, never delivered), **dedupe** records, counters for message ids
  and fencing tokens, and the **session registry**.

Each change of a slot is one transaction of the backend's own kind: Redis ``WATCH``/``MULTI``/
``EXEC`` (optimistic, retried on conflict) or SQLite ``BEGIN IMMEDIATE``. The transitions
(``claim_step``, ``take``, ``ack``...) are plain functions over a ``Tx``, shared by both stores;
reads that usually change nothing (a claim on a busy or empty session) run first on a snapshot and
are repeated inside a transaction only when they do change something.

Clocks: leases and dedupe ages use the clients' wall clock (``now_ms``), so processes sharing a
queue should run on one host or on clocks kept in step.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from obsqueue.engines.types import now_ms

__all__ = [
    "DeadRow",
    "GlueStore",
    "Held",
    "Orphan",
    "Prepared",
    "Slot",
    "Step",
    "Tx",
    "decide_existing",
    "ack",
    "adopt",
    "block",
    "claim_residue",
    "claim_step",
    "extend",
    "fail",
    "reset",
    "take",
    "unblock",
]

T = TypeVar("T")


# ------------------------------------------------------------------------------ the record


@dataclass(slots=True)
class Held:
    """The message a slot holds: taken out of Huey's queue, pending (retry/reset) or in flight."""

    id: int
    csid: str
    tuid: str | None
    status: Literal["pending", "processing"] = "pending"
    attempt: int = 0
    token: int | None = None
    lease_ms: int = 0
    avail_ms: int = 0
    consumer: str = ""
    error: str | None = None


@dataclass(slots=True)
class Orphan:
    """A task popped from Huey's queue by a consumer that did not expect it (see ``adopt``)."""

    id: int
    csid: str
    tuid: str | None


@dataclass(slots=True)
class Slot:
    """One session's glue record."""

    ver: int = 0
    pop: int | None = None
    pop_until_ms: int = 0
    blocked_until_ms: int = 0
    held: Held | None = None
    orphans: list[Orphan] = field(default_factory=list)

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes | None) -> Slot:
        data = json.loads(text) if text else {}
        if not data:
            return cls()
        held = data.pop("held")
        orphans = [Orphan(**o) for o in data.pop("orphans")]
        return cls(**data, held=None if held is None else Held(**held), orphans=orphans)


@dataclass(frozen=True, slots=True)
class Prepared:
    """What ``GlueStore.prepare`` decided for an enqueue: a new id, a duplicate of a held message,
    or a record whose message must be looked for in Huey's queue (``check``)."""

    kind: Literal["new", "dup", "check"]
    id: int
    session: str = ""
    age_ms: int = 0


@dataclass(frozen=True, slots=True)
class DeadRow:
    id: int
    session: str
    attempt: int
    error: str | None


class NeedsTxn(Exception):
    """A snapshot read found that it must change something: run it again in a transaction."""


class Tx:
    """One session's slot inside a transaction (or a snapshot, where changes raise NeedsTxn).
    Changes other than to ``slot`` are recorded as ops the store applies atomically with it."""

    def __init__(
        self, session: str, slot: Slot, new_token: Callable[[], int] | None = None
    ) -> None:
        self.session = session
        self.slot = slot
        self.now_ms = now_ms()
        self.ops: list[tuple[Any, ...]] = []
        self._original = slot.dumps()
        self._new_token = new_token

    def _op(self, *op: Any) -> None:
        if self._new_token is None:
            raise NeedsTxn
        self.ops.append(op)

    def new_token(self) -> int:
        if self._new_token is None:
            raise NeedsTxn
        return self._new_token()

    def put_env(self, message_id: int, env: str) -> None:
        self._op("put_env", message_id, env)

    def drop_env(self, message_id: int) -> None:
        self._op("drop_env", message_id)

    def forget(self, csid: str, tuid: str | None, message_id: int) -> None:
        if tuid is not None:
            self._op("forget", csid, tuid, message_id)

    def bury(self, message_id: int, attempt: int, error: str | None) -> None:
        self._op("bury", message_id, attempt, error)

    def wake(self) -> None:
        self._op("wake")

    def dirty(self) -> bool:
        return bool(self.ops) or self.slot.dumps() != self._original


# ----------------------------------------------------------------- the transitions


@dataclass(frozen=True, slots=True)
class Step:
    """What a claim found in the slot: a message to deliver, nothing (busy, not due, blocked),
    or an empty slot, in which case the claimer looks at the head of Huey's queue."""

    kind: Literal["deliver", "none", "empty"]
    held: Held | None = None
    ver: int = 0
    pop: int | None = None
    pop_free: bool = True


def claim_step(tx: Tx, consumer: str, lease_ms: int, max_attempts: int) -> Step:
    """Claim the held message if it is claimable, else the oldest orphan, else report empty."""
    s, now = tx.slot, tx.now_ms
    if s.blocked_until_ms > now:
        return Step("none")
    h = s.held
    if h is not None:
        if h.status == "processing":
            if h.lease_ms > now:
                return Step("none")
            if h.attempt >= max_attempts:
                kill(tx, "lease expired on the last attempt")
                return Step("none")
        elif h.avail_ms > now:
            return Step("none")
        return Step("deliver", grant(tx, h, consumer, lease_ms))
    if s.orphans:
        first = min(s.orphans, key=lambda o: o.id)
        s.orphans.remove(first)
        s.held = Held(first.id, first.csid, first.tuid)
        s.ver += 1
        return Step("deliver", grant(tx, s.held, consumer, lease_ms))
    return Step("empty", ver=s.ver, pop=s.pop, pop_free=s.pop_until_ms <= now)


def grant(tx: Tx, h: Held, consumer: str, lease_ms: int) -> Held:
    """A new claim on ``h``: attempt + 1, a fresh fencing token, a lease."""
    h.status = "processing"
    h.attempt += 1
    h.token = tx.new_token()
    h.lease_ms = tx.now_ms + lease_ms
    h.consumer = consumer
    return h


def kill(tx: Tx, reason: str) -> None:
    """The held message is dead: kept (envelope and dead row), out of the slot, key released."""
    h = tx.slot.held
    assert h is not None
    tx.bury(h.id, h.attempt, reason)
    tx.forget(h.csid, h.tuid, h.id)
    tx.slot.held = None
    tx.slot.ver += 1
    tx.wake()


def take(
    tx: Tx, ver: int, env: dict[str, Any], env_text: str, consumer: str, lease_ms: int
) -> Held | None:
    """Record Huey's head task as held and claimed, before the claimer dequeues it; refused if
    the slot changed since the claimer saw it empty."""
    s = tx.slot
    if s.ver != ver or s.held is not None or s.orphans or s.blocked_until_ms > tx.now_ms:
        return None
    s.held = Held(int(env["id"]), env["content_session_id"], env["tool_use_id"])
    grant(tx, s.held, consumer, lease_ms)
    s.pop, s.pop_until_ms = s.held.id, s.held.lease_ms
    s.ver += 1
    tx.put_env(s.held.id, env_text)
    return s.held


def claim_residue(tx: Tx, ver: int, message_id: int, lease_ms: int) -> bool:
    """The head of Huey's queue is a task already taken whose taker never dequeued it (it died
    or stalled past its lease): take over the right to dequeue it."""
    s = tx.slot
    if s.ver != ver or s.held is not None or s.pop != message_id or s.pop_until_ms > tx.now_ms:
        return False
    s.pop_until_ms = tx.now_ms + lease_ms
    s.ver += 1
    return True


def adopt(tx: Tx, env: dict[str, Any], env_text: str) -> bool:
    """A dequeue returned a task its caller did not expect (another consumer had removed the one
    it expected): keep it as an orphan, delivered before Huey's queue, unless it is known."""
    s, message_id = tx.slot, int(env["id"])
    known = message_id == s.pop or (s.held is not None and s.held.id == message_id)
    if known or any(o.id == message_id for o in s.orphans):
        return False
    s.orphans.append(Orphan(message_id, env["content_session_id"], env["tool_use_id"]))
    s.ver += 1
    tx.put_env(message_id, env_text)
    tx.wake()
    return True


def _claimed(tx: Tx, message_id: int, token: int) -> Held | None:
    h = tx.slot.held
    if h is None or h.id != message_id or h.status != "processing" or h.token != token:
        return None
    return h


def ack(tx: Tx, message_id: int, token: int) -> bool:
    """Processed: the held message is deleted and its dedupe key released."""
    h = _claimed(tx, message_id, token)
    if h is None:
        return False
    tx.forget(h.csid, h.tuid, h.id)
    tx.drop_env(h.id)
    tx.slot.held = None
    tx.slot.ver += 1
    tx.wake()
    return True


def fail(
    tx: Tx,
    message_id: int,
    token: int,
    reason: str,
    retry: bool,
    delay_ms: int,
    max_attempts: int,
) -> bool:
    """Failed: back to pending in the slot (its place kept) after ``delay_ms``, or dead."""
    h = _claimed(tx, message_id, token)
    if h is None:
        return False
    if not retry or h.attempt >= max_attempts:
        kill(tx, reason)
        return True
    h.status, h.token, h.error = "pending", None, reason
    h.avail_ms = tx.now_ms + delay_ms
    tx.wake()
    return True


def extend(tx: Tx, message_id: int, token: int, lease_ms: int) -> Held | None:
    h = _claimed(tx, message_id, token)
    if h is not None:
        h.lease_ms = tx.now_ms + lease_ms
    return h


def reset(tx: Tx) -> int:
    """Startup recovery: the in-flight message goes back to pending at its place; the claimers
    are presumed gone, so the right to dequeue a leftover head task is released too."""
    h = tx.slot.held
    if h is None or h.status != "processing":
        return 0
    h.status, h.token, h.avail_ms = "pending", None, 0
    tx.slot.pop_until_ms = 0
    tx.wake()
    return 1


def block(tx: Tx, lease_ms: int) -> int | None:
    """Start a clear: no claim or take until ``unblock`` (or the lease ends). Returns ``pop``,
    the id of a taken task that may still be at the head of Huey's queue (not to be counted)."""
    tx.slot.blocked_until_ms = tx.now_ms + lease_ms
    tx.slot.ver += 1
    return tx.slot.pop


def unblock(tx: Tx) -> int:
    """End a clear: drop a pending held message and the orphans; return how many."""
    s, dropped = tx.slot, 0
    if s.held is not None and s.held.status == "pending":
        tx.forget(s.held.csid, s.held.tuid, s.held.id)
        tx.drop_env(s.held.id)
        s.held, dropped = None, 1
    for o in s.orphans:
        tx.forget(o.csid, o.tuid, o.id)
        tx.drop_env(o.id)
    dropped += len(s.orphans)
    s.orphans, s.blocked_until_ms = [], 0
    s.ver += 1
    tx.wake()
    return dropped


# ------------------------------------------------------------------------- the stores


class GlueStore(abc.ABC):
    """Where the glue lives: atomic slot updates, dedupe records, envelopes, dead rows, wakeup."""

    @abc.abstractmethod
    def update(self, session: str, fn: Callable[[Tx], T], *, snapshot_first: bool = False) -> T:
        """Run ``fn`` on the session's slot and commit what it changed, atomically."""

    @abc.abstractmethod
    def read_slots(self, sessions: Sequence[str]) -> dict[str, Slot]:
        """The slots of these sessions (empty ones for sessions without a record)."""

    @abc.abstractmethod
    def prepare(self, session: str, csid: str, tuid: str | None, stale_id: int) -> Prepared:
        """Register the session and take a message id; with a ``tuid``, reserve the dedupe key
        unless a live record holds it (a record naming ``stale_id`` counts as absent)."""

    @abc.abstractmethod
    def forget_many(self, keys: Sequence[tuple[str, str, int]]) -> None:
        """Drop dedupe records ``(csid, tuid, id)`` that still name that id."""

    @abc.abstractmethod
    def envs(self, ids: Sequence[int]) -> dict[int, str]:
        """The stored envelopes (JSON text) of these message ids."""

    @abc.abstractmethod
    def dead(self) -> list[DeadRow]:
        """Dead messages, by id."""

    @abc.abstractmethod
    def sessions(self) -> list[str]:
        """Every session that was ever enqueued to in this namespace."""

    @abc.abstractmethod
    def wake(self, session: str) -> None:
        """Tell consumers blocked on the session that something changed."""

    @abc.abstractmethod
    def wait_mark(self, session: str) -> object:
        """A token taken before a claim; ``wait`` returns early once it is outdated."""

    @abc.abstractmethod
    def wait(self, session: str, timeout_s: float, mark: object) -> None:
        """Block until woken or ``timeout_s`` passed."""

    @abc.abstractmethod
    def destroy(self) -> None:
        """Delete every glue record of the namespace."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def _run(
        self, session: str, slot: Slot, fn: Callable[[Tx], T], new_token: Callable[[], int] | None
    ) -> tuple[T, Tx]:
        tx = Tx(session, slot, new_token)
        return fn(tx), tx

    def _snapshot(self, session: str, fn: Callable[[Tx], T]) -> list[T]:
        """Run ``fn`` on a plain read: ``[result]`` if that changed nothing, else ``[]``."""
        try:
            result, tx = self._run(session, self.read_slots([session])[session], fn, None)
        except NeedsTxn:
            return []
        return [] if tx.dirty() else [result]


def decide_existing(rec_id: int, rec_session: str, rec_at_ms: int, slot: Slot) -> Prepared:
    """A dedupe record exists: a duplicate if its message is held by the slot (or an orphan);
    otherwise it must be looked for in Huey's queue."""
    if (slot.held is not None and slot.held.id == rec_id) or any(
        o.id == rec_id for o in slot.orphans
    ):
        return Prepared("dup", rec_id)
    return Prepared("check", rec_id, rec_session, now_ms() - rec_at_ms)
