"""``huey+redis://host:port/db`` and ``huey+sqlite:///path`` — adapters over Huey (tested: 3.5).

This module holds what both share: the protocol over Huey's queue and the glue store
(``HueyEngine``). The variants are ``huey/redis_engine.py`` (with ``huey/redis_store.py``) and
``huey/sqlite_engine.py`` (with ``huey/sqlite_store.py``); only the first imports redis.

What Huey gives, used through its public API as its users would:

* a **task** per observation: ``huey.task()(record_observation)`` (``engines/tasks.py``) on a
  ``RedisHuey``/``SqliteHuey`` instance per session, enqueued by calling the task with the
  message's envelope (``task(envelope, id=str(message_id))``); the tasks in storage are real Huey
  tasks that a Huey consumer importing ``obsqueue.engines.tasks`` could run;
* a **FIFO queue per Huey instance name**; the name encodes namespace and session
  (``{namespace}.s.<session>``), so each session is one Huey queue (a Redis list; rows of the
  ``task`` table in SQLite);
* **peek** (``huey.pending(limit=1)``), **dequeue** (``huey.dequeue()``: the task is *removed*),
  ``pending_count()``, ``flush()`` and Huey's serializer (pickle).

What Huey lacks, and obsqueue adds (the ``glue`` ClassVar; the record is ``engines/huey/glue.py``):

* **No acknowledgement.** Huey's dequeue removes the task, so a consumer that dies holding it
  loses it (Huey's documented at-most-once delivery). obsqueue writes a per-session *slot* record
  — the message, its attempt, fencing token and lease — **before** it dequeues the task: the
  claimer peeks the head, records it, then dequeues it. A SIGKILL at any point loses nothing: if
  it falls between record and dequeue, the task stays at the head of Huey's queue as a *residue*
  whose id the slot remembers (``pop``); it is redelivered from the slot after its lease and the
  residue is dequeued and dropped, never delivered twice.
* **No per-session gate** (Huey runs tasks of a queue concurrently): only the slot's message is
  deliverable, so one message per session is in flight; fencing tokens and leases live there too.
* **Retries in place**: Huey's own retries re-enqueue at the tail or via its schedule, which would
  break per-session order; a failed message stays in the slot (pending, with a backoff) instead,
  and dead messages go to a glue dead store.
* **Dedupe**: a record per (content_session_id, tool_use_id), taken with the message id in one
  transaction before the task is enqueued. A record whose message is found neither in the slot
  nor in Huey's queue after ``DEDUPE_GRACE_S`` (its producer died before enqueueing) is replaced.
* **Message ids and fencing tokens**: counters in the glue (Huey's ``storage.incr`` exists, but
  the id must be taken in the same transaction as the session registration and dedupe record).
* **Wakeup**: Redis — a wake list per session that consumers BLPOP; SQLite — ``PRAGMA
  data_version`` polled every 5 ms.
* **The consumer**: obsqueue's iterator replaces Huey's consumer (``huey_consumer``); no Huey
  worker runs, and Huey's schedule, result store, locks and signals are not used.

Known limits (the first two need a process stalled, e.g. by SIGSTOP, past a lease or grace):

* A claimer stalled past its lease between recording a task and dequeueing it may, on waking,
  dequeue a *later* task (Huey's dequeue cannot be made conditional). It keeps that task as an
  *orphan* in the slot, delivered before the rest of Huey's queue; if a second claimer takes the
  next head in the same instant, that one message is delivered out of order, and a crash in the
  instant between the surprise dequeue and recording the orphan loses it.
* A producer stalled for longer than ``DEDUPE_GRACE_S`` between reserving a dedupe key and
  enqueueing may see its key re-used by another enqueue: two messages with that key.
* Message ids are taken just before Huey's enqueue; two producers enqueueing to one session at
  the same instant may push in the opposite order of their ids. Delivery follows Huey's queue.
* Cost: a claim is about 7 Redis round trips (3 of them writes, each an fsync under
  ``appendfsync always``) or 2 SQLite commits; an enqueue 3 round trips (6 with a tool_use_id)
  or 2 commits. The native engines need one of each.

Durability: huey+redis holds P4/P5 across kill -9 of the server when it runs with
``appendonly yes`` + ``appendfsync always`` (``describe()`` reads the live settings; every write
here is a plain command or a MULTI/EXEC transaction). huey+sqlite uses WAL with
``synchronous=FULL`` on Huey's connections (``fsync=True``) and on the glue's. Leases use the
clients' clocks. Claims are not renewed automatically: call ``extend_lease(msg)``.
"""

from __future__ import annotations

import abc
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

from obsqueue.engines.base import ObservationQueueEngine, PendingMessageWithId
from obsqueue.engines.huey.glue import (
    GlueStore,
    Held,
    Prepared,
    Slot,
    Step,
    ack,
    adopt,
    block,
    claim_residue,
    claim_step,
    extend,
    fail,
    reset,
    take,
    unblock,
)
from obsqueue.engines.options import to_ms
from obsqueue.engines.records import delivered, stored
from obsqueue.engines.tasks import record_observation
from obsqueue.engines.types import Claim, EnqueueResult, PendingMessage, RawMessage, now_ms
from obsqueue.errors import EngineUnavailableError, stale_claim

__all__ = ["COMMON_GLUE", "HueyEngine", "envelope", "huey_name"]

T = TypeVar("T")

COMMON_GLUE: tuple[str, ...] = (
    "in-flight record per session written before Huey's dequeue (lease, attempt, fencing token)",
    "residue check: a recorded task still at the head of Huey's queue is dropped, not redelivered",
    "orphan list for a task dequeued by surprise after a stall",
    "retry in place and a dead-letter store (Huey's retries re-enqueue at the tail)",
    "dedupe record per (content_session_id, tool_use_id), checked against Huey's queue",
    "message-id and fencing-token counters, session registry",
    "clear lock per session",
    "obsqueue's iterator replaces Huey's consumer",
)

_MAX_ROUNDS = 8
_AGAIN = object()


def huey_name(namespace: str, session_id: str) -> str:
    """The Huey instance (= queue) name of one session."""
    return "{" + namespace + "}.s." + session_id


def envelope(
    message_id: int, session_id: str, csid: str, message: PendingMessage, payload_json: str
) -> dict[str, Any]:
    """The argument of the Huey task: everything needed to deliver the message."""
    return {
        "id": message_id,
        "session_id": session_id,
        "content_session_id": csid,
        "kind": message.kind,
        "tool_use_id": message.tool_use_id,
        "payload_json": payload_json,
        "original_timestamp": message.original_timestamp,
        "enqueued_at_ms": now_ms(),
    }


class HueyEngine(ObservationQueueEngine):
    """What both variants share: the protocol over Huey's queue and the glue store."""

    DEDUPE_GRACE_S: ClassVar[float] = 5.0
    #: How many per-session Huey instances to keep (the least recently used is released).
    SESSION_CACHE: ClassVar[int] = 256

    _store: GlueStore

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._hueys: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._hueys_lock = threading.Lock()

    # -------------------------------------------------------------- per-variant hooks

    @abc.abstractmethod
    def _new_huey(self, name: str) -> Any:
        """A Huey instance (RedisHuey / SqliteHuey) whose queue is ``name``."""

    def _drop_huey(self, huey: Any) -> None:
        """Release a Huey instance evicted from the cache."""

    @abc.abstractmethod
    def _raw_queue(self, huey: Any) -> list[bytes]:
        """The backdoor: the stored task bytes of a Huey queue, read directly, dequeue order."""

    @abc.abstractmethod
    def _call(self, op: Callable[[], T], *, repeatable: bool = False) -> T:
        """Run ``op``, translating the driver's errors to EngineUnavailableError. One ``op``
        may bundle several of Huey's and the glue's writes: it is run again (under the retry
        policy) only when ``repeatable``, i.e. when it only reads."""

    # ------------------------------------------------------------------ Huey instances

    def _huey(self, session_id: str) -> tuple[Any, Any]:
        """(huey, task) for a session, from a small LRU cache."""
        with self._hueys_lock:
            found = self._hueys.get(session_id)
            if found is not None:
                self._hueys.move_to_end(session_id)
                return found
            huey = self._new_huey(huey_name(self.options.namespace, session_id))
            found = self._hueys[session_id] = (huey, huey.task()(record_observation))
            if len(self._hueys) > self.SESSION_CACHE:
                self._drop_huey(self._hueys.popitem(last=False)[1][0])
            return found

    # --------------------------------------------------------------------- enqueue

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        def run() -> EnqueueResult:
            prepared = self._reserve(session_id, content_session_id, message.tool_use_id)
            if prepared.kind == "dup":
                return EnqueueResult(prepared.id, duplicate=True)
            env = envelope(prepared.id, session_id, content_session_id, message, payload_json)
            _, task = self._huey(session_id)
            task(env, id=str(prepared.id))  # Huey's task API: serialize, then storage.enqueue
            self._store.wake(session_id)
            return EnqueueResult(prepared.id)

        return self._call(run)

    def _reserve(self, session_id: str, csid: str, tuid: str | None) -> Prepared:
        """Take an id (and the dedupe key), or find the queued message holding the key. A record
        older than ``DEDUPE_GRACE_S`` is replaced, so the wait is bounded by that grace (plus
        ``connect_timeout_s``, should the clocks disagree)."""
        stale = 0
        give_up = time.monotonic() + self.DEDUPE_GRACE_S + self.options.connect_timeout_s
        while time.monotonic() < give_up:
            prepared = self._store.prepare(session_id, csid, tuid, stale)
            if prepared.kind != "check":
                return prepared
            if self._present(prepared.session, prepared.id):
                return Prepared("dup", prepared.id)
            if prepared.age_ms >= self.DEDUPE_GRACE_S * 1000:
                stale = prepared.id  # its producer died before enqueueing: replace the record
            else:
                time.sleep(0.005)  # its producer is between reserving and enqueueing
        raise EngineUnavailableError(
            f"the dedupe key of ({csid!r}, {tuid!r}) stayed reserved by another enqueue past "
            f"{self.DEDUPE_GRACE_S} s; nothing was enqueued: retry"
        )

    def _present(self, session_id: str, message_id: int) -> bool:
        """Is the message pending or in flight? Huey's queue is read before the slot: a task
        is recorded in the slot before it leaves the queue, so it is seen in one of them."""
        huey, _ = self._huey(session_id)
        slot_before = self._store.read_slots([session_id])[session_id]
        queued = [int(t.id) for t in huey.pending()]
        if message_id in queued and message_id != slot_before.pop:
            return True
        slot = self._store.read_slots([session_id])[session_id]
        held = slot.held is not None and slot.held.id == message_id
        return held or any(o.id == message_id for o in slot.orphans)

    # ----------------------------------------------------------------------- claim

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        lease_ms, max_attempts = to_ms(lease_s), self.options.max_attempts

        def step_of(tx: Any) -> Step:
            return claim_step(tx, consumer_id, lease_ms, max_attempts)

        def run() -> PendingMessageWithId | None:
            for _ in range(_MAX_ROUNDS):
                step = self._store.update(session_id, step_of, snapshot_first=True)
                if step.kind == "deliver":
                    assert step.held is not None
                    return self._deliver(session_id, step.held)
                if step.kind == "none":
                    return None
                got = self._take_head(session_id, step, consumer_id, lease_ms)
                if got is not _AGAIN:
                    return got  # type: ignore[return-value]
            return None

        return self._call(run)

    def _take_head(
        self, session_id: str, step: Step, consumer_id: str, lease_ms: int
    ) -> PendingMessageWithId | object | None:
        """The slot is empty: record Huey's head task in it, then dequeue the task."""
        huey, _ = self._huey(session_id)
        head = next(iter(huey.pending(limit=1)), None)
        if head is None:
            return None
        head_id = int(head.id)
        if head_id == step.pop:  # taken before, never dequeued by its taker
            if not step.pop_free:
                return None
            if self._store.update(
                session_id, lambda tx: claim_residue(tx, step.ver, head_id, lease_ms)
            ):
                self._dequeue(session_id, huey, head_id)
            return _AGAIN
        env = head.args[0]
        env_text = json.dumps(env, separators=(",", ":"))
        held = self._store.update(
            session_id, lambda tx: take(tx, step.ver, env, env_text, consumer_id, lease_ms)
        )
        if held is None:
            return _AGAIN
        self._dequeue(session_id, huey, head_id)
        return _message(session_id, held, env)

    def _dequeue(self, session_id: str, huey: Any, expected: int) -> None:
        """Huey's dequeue; a task other than ``expected`` is kept as an orphan."""
        task = huey.dequeue()
        if task is not None and int(task.id) != expected:
            env = task.args[0]
            env_text = json.dumps(env, separators=(",", ":"))
            self._store.update(session_id, lambda tx: adopt(tx, env, env_text))

    def _deliver(self, session_id: str, held: Held) -> PendingMessageWithId | None:
        text = self._store.envs([held.id]).get(held.id)
        return None if text is None else _message(session_id, held, json.loads(text))

    # ---------------------------------------------------------- acknowledgements

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        token = _token(msg)
        if not self._call(
            lambda: self._store.update(msg.session_id, lambda tx: ack(tx, msg.id, token))
        ):
            raise stale_claim(msg)

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        token, delay_ms = _token(msg), self.retry_delay_ms(msg.attempt)

        def change(tx: Any) -> bool:
            return fail(tx, msg.id, token, reason, retry, delay_ms, self.options.max_attempts)

        if not self._call(lambda: self._store.update(msg.session_id, change)):
            raise stale_claim(msg)

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        token, lease_ms = _token(msg), to_ms(lease_s)
        held = self._call(
            lambda: self._store.update(
                msg.session_id, lambda tx: extend(tx, msg.id, token, lease_ms)
            )
        )
        if held is None:
            raise stale_claim(msg)
        return Claim(token, held.lease_ms, held.consumer)

    # ------------------------------------------------------------ counts and clear

    def _count(self, session_id: str) -> int:
        huey, _ = self._huey(session_id)
        slot = self._store.read_slots([session_id])[session_id]
        queued = int(huey.pending_count())
        count = queued + (slot.held is not None) + len(slot.orphans)
        if slot.pop is not None and queued:
            head = next(iter(huey.pending(limit=1)), None)
            count -= head is not None and int(head.id) == slot.pop
        return count

    def _pending_count(self, session_id: str) -> int:
        return self._call(lambda: self._count(session_id), repeatable=True)

    def _total_depth(self) -> int:
        return self._call(
            lambda: sum(self._count(s) for s in self._store.sessions()), repeatable=True
        )

    def _clear_pending(self, session_id: str) -> int:
        lease_ms = to_ms(self.options.lease_s)

        def run() -> int:
            residue = self._store.update(session_id, lambda tx: block(tx, lease_ms))
            huey, _ = self._huey(session_id)
            dropped = []
            while (task := huey.dequeue()) is not None:
                if int(task.id) != residue:
                    dropped.append(task.args[0])
            keys = [
                (e["content_session_id"], e["tool_use_id"], e["id"])
                for e in dropped
                if e["tool_use_id"] is not None
            ]
            self._store.forget_many(keys)
            return len(dropped) + self._store.update(session_id, unblock)

        return self._call(run)

    def _reset_processing(self, session_id: str | None) -> int:
        def run() -> int:
            sessions = self._store.sessions() if session_id is None else [session_id]
            return sum(self._store.update(s, reset) for s in sessions)

        return self._call(run)

    # ---------------------------------------------------------------------- wakeup

    def _wakeup_mark(self, session_id: str) -> object:
        try:
            return self._call(lambda: self._store.wait_mark(session_id))
        except EngineUnavailableError:
            return None

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        started = time.monotonic()
        try:
            self._call(lambda: self._store.wait(session_id, timeout_s, mark))
        except EngineUnavailableError:
            # Only a hint: sleep out the slice; the next claim reports the outage.
            time.sleep(max(0.0, timeout_s - (time.monotonic() - started)))

    # ---------------------------------------------------------- oracle and cleanup

    def inspect_raw(self) -> list[RawMessage]:
        self._check_open()
        return self._call(self._read_raw, repeatable=True)

    def _read_raw(self) -> list[RawMessage]:
        sessions = self._store.sessions()
        slots = self._store.read_slots(sessions)
        dead = self._store.dead()
        wanted = [m.id for s in slots.values() for m in _slot_messages(s)]
        envs = self._store.envs(wanted + [d.id for d in dead])
        rows = [r for s in sessions for r in self._queued_rows(s, slots[s])]
        for slot in slots.values():
            if slot.held is not None:
                rows.append(_raw(json.loads(envs[slot.held.id]), slot.held))
            rows += [_raw(json.loads(envs[o.id]), None) for o in slot.orphans]
        for d in dead:
            rows.append(_raw(json.loads(envs[d.id]), None, "dead", d.attempt, d.error))
        return sorted(rows, key=lambda r: r.id)

    def _queued_rows(self, session_id: str, slot: Slot) -> list[RawMessage]:
        huey, _ = self._huey(session_id)
        tasks = [huey.deserialize_task(data) for data in self._raw_queue(huey)]
        return [_raw(t.args[0], None) for t in tasks if int(t.id) != slot.pop]

    def destroy(self) -> None:
        self._check_open()

        def run() -> None:
            for session_id in self._store.sessions():
                self._huey(session_id)[0].flush()  # Huey's own cleanup of its queue's keys
            self._store.destroy()

        self._call(run, repeatable=True)

    def _release_hueys(self) -> None:
        with self._hueys_lock:
            for huey, _ in self._hueys.values():
                self._drop_huey(huey)
            self._hueys.clear()


# ---------------------------------------------------------------------------- helpers


def _token(msg: PendingMessageWithId) -> int:
    assert msg.claim is not None  # checked by the base class
    return msg.claim.token


def _slot_messages(slot: Slot) -> Iterator[Held | Any]:
    if slot.held is not None:
        yield slot.held
    yield from slot.orphans


def _message(session_id: str, held: Held, env: dict[str, Any]) -> PendingMessageWithId:
    assert held.token is not None
    fields = env["content_session_id"], env["kind"], env["tool_use_id"], env["payload_json"]
    ts, enq = env["original_timestamp"], env["enqueued_at_ms"]
    claim = (held.token, held.lease_ms, held.consumer)
    return delivered(held.id, session_id, *fields, ts, held.attempt, claim, enq)


def _raw(
    env: dict[str, Any],
    held: Held | None,
    status: str = "pending",
    attempt: int = 0,
    error: str | None = None,
) -> RawMessage:
    fields = env["session_id"], env["content_session_id"], env["kind"], env["tool_use_id"]
    payload, ts = env["payload_json"], env["original_timestamp"]
    if held is None:
        return stored(env["id"], *fields, payload, ts, status, attempt, (None, None), error)
    claim = (held.token, held.lease_ms if held.token is not None else None)
    return stored(env["id"], *fields, payload, ts, held.status, held.attempt, claim, held.error)
