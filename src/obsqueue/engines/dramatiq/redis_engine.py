"""``dramatiq+redis://host:port/db`` — observations as Dramatiq messages on Dramatiq's Redis broker.

What Dramatiq (2.2) gives, used through its public API the way its users use it:

* **Messages.** One ``RedisBroker`` per engine (namespace ``obsq-dramatiq:<namespace>``, no
  middleware) with an actor ``record_observation`` registered on it for
  :func:`obsqueue.engines.tasks.record_observation`. Each observation is
  ``actor.message_with_options(args=(envelope,), obsq_id=id)`` copied to the session's queue and
  sent with ``broker.enqueue`` — a real Dramatiq message (``Message.decode`` reads it back; a
  Dramatiq worker could run it).
* **FIFO storage.** One Dramatiq queue per session (``s_<session>``, or ``x_<hex>`` for ids that
  are not valid queue names): Dramatiq's list of message ids plus its ``.msgs`` hash.
* **Delivery and acknowledgement.** ``broker.consume(queue, prefetch=1, timeout=…)``
  fetches (Dramatiq's script moves the message into its per-broker acks set: *in flight*);
  ``consumer.ack`` deletes it, ``consumer.nack`` moves it to Dramatiq's dead-letter queue
  (``.XQ``), which is the contract's *dead* state. obsqueue's iterator replaces Dramatiq's
  ``Worker`` (and so its Retries/TimeLimit/AgeLimit middleware): consumers pull through the
  contract; no Dramatiq worker runs.
* **Wakeup.** Dramatiq's Redis consumer polls: after an empty fetch it sleeps
  ``dramatiq.common.compute_backoff(misses, max_backoff=timeout)`` — 5 ms doubling, jittered, up
  to ``timeout``. The iterator waits exactly so between claims (``poll_interval_s``, default 0.1,
  at most 0.2, the iterator's wait slice; Dramatiq's ``Worker`` uses ``worker_timeout=1000``),
  plus an in-process wake for enqueues made through the same engine object. There is no push:
  wakeup across processes is this poll (measured p50 41 ms, p99 92 ms at the default).

What obsqueue adds (``DramatiqEngine.glue``), each state change one Lua script
(``engines/redis/lua/dramatiq_*.lua``) over Dramatiq's keys and glue keys under ``<ns>:__obsq__:``:

* **Ids**: an INCR counter, stored in the message options as ``obsq_id``. It is taken just
  before Dramatiq's enqueue script runs, so two enqueues *to one session that overlap in time*
  may be queued in the other order than their ids (the checker's order is real-time precedence).
* **Per-session gate**: a hash per queue; a claim takes it (only if nothing of the session is
  in flight and the head is due), then Dramatiq's consumer fetches, then the claim is finalised.
  Dramatiq's ``prefetch=1`` only bounds one consumer; any other consumer would fetch the next
  message of the session.
* **Leases, fencing, stall recovery, attempts**: the gate holds a token (INCR) and a lease. A
  claim finding the lease run out puts the holder's message back at the *head* (or, out of
  attempts, fetches it and ``consumer.nack``\\ s it). Acks first *fence* (token check, and the
  lease pinned for ``ACK_GRACE_MS`` so the ack cannot be overtaken), then call Dramatiq's
  ``consumer.ack``/``nack``, then check that it took effect (the message left ``.msgs``; else
  ``StaleClaimError``). Deliveries per message are counted in a glue hash.
* **Retry and reset keep the place**: back to the *front* of the queue (LPUSH) with a due time;
  Dramatiq's ``consumer.requeue`` and its maintenance RPUSH to the back.
* **Dedupe**: a hash ``(content_session_id, tool_use_id) -> id|queue|rid``, reserved before
  Dramatiq's enqueue and confirmed after it; a live reservation makes a racing enqueue wait for
  it (so exactly one wins); a stale entry (its rid no longer in ``.msgs``) is free.
* **Clear, depth, queue registry**: a set of queue names (Dramatiq keeps none in Redis);
  clear deletes the list's messages only (Dramatiq's ``flush`` would drop in-flight and dead too).

Dramatiq's own recovery is switched off (``maintenance_chance=0``), for the scorecard: it
requeues the unacked messages of a broker whose heartbeat is older than ``heartbeat_timeout``
(60 s) — at the *back* of the queue, without counting an attempt, on a 1-in-1000 chance per
broker command on that queue, with no fencing (the old consumer's ack is silently a no-op, its
``consumer.ack`` returns as if it worked) — and it deletes dead letters after
``dead_message_ttl`` (7 days), while the contract keeps them. ``tests/integration/
test_dramatiq_engine.py`` measures it.

Known windows (all need a process frozen or killed between two of the adapter's commands): a
claimant frozen longer than its lease between the gate and the fetch gives its message back,
and another claimant may meanwhile take the next one; a producer killed between Dramatiq's
enqueue and the dedupe confirmation leaves its key reserved for ``reserve_s`` only, after which
the same key can be enqueued again.

Durability: all state — Dramatiq's and the glue — lives in Redis, and every step of an enqueue is
written before ``enqueue`` returns. With ``appendonly yes`` + ``appendfsync always`` a returned
enqueue or ack survives kill -9 of the server; ``describe()`` reads the settings from the server.
Claims are not renewed automatically: a consumer that may outlive its lease calls
``extend_lease``. Engine options: ``poll_interval_s``, ``socket_timeout_s``, ``max_connections``.
``dramatiq+amqp://`` is a separate engine: ``obsqueue.engines.dramatiq.amqp_engine``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import dramatiq
import dramatiq.common
import dramatiq.errors
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message

from obsqueue.engines import tasks
from obsqueue.engines.base import PendingMessageWithId, RawMessage
from obsqueue.engines.dramatiq.queues import queue_name
from obsqueue.engines.options import positive_seconds, to_ms
from obsqueue.engines.records import dedupe_field
from obsqueue.engines.redis.family import RedisBacked
from obsqueue.engines.redis.link import (
    NotSentError,
    claim_token,
    storable,
    unlink_matching,
)
from obsqueue.engines.types import Capability, Claim, EnqueueResult, MessageStatus, PendingMessage
from obsqueue.errors import EngineUnavailableError, redact_url, stale_claim

__all__ = ["DramatiqEngine", "queue_name"]

T = TypeVar("T")

SCRIPTS = (
    "reserve",
    "confirm",
    "gate",
    "claimed",
    "fence",
    "release",
    "requeue",
    "reset",
    "clear",
    "depth",
)
#: The default of ``poll_interval_s``: the longest wait between two claims of an idle session.
POLL_INTERVAL_S = 0.1
#: How long a fence pins a lease while Dramatiq's ack runs, so no claim overtakes it.
ACK_GRACE_MS = 5000


class DramatiqEngine(RedisBacked):
    """Sessions as Dramatiq queues, messages as Dramatiq messages; obsqueue's glue adds the
    gate, leases, fencing, attempts, dedupe and ids (see the module docstring)."""

    scheme: ClassVar[str] = "dramatiq+redis"
    # Every property holds with the glue; SERVER_CRASH_DURABLE in the durable configuration only
    # (appendfsync always): describe()["durability"]["server_crash_durable"] says which is live.
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    glue: ClassVar[tuple[str, ...]] = (
        "message ids: INCR counter, stored as Dramatiq message option obsq_id",
        "per-session gate: a claim takes it before Dramatiq's fetch (prefetch=1 bounds only one "
        "consumer)",
        "leases and fencing: token (INCR) + lease in the gate; ack = fence, Dramatiq's "
        "consumer.ack/nack, then a check that it took effect",
        "stall recovery: an expired lease puts the message back at the head (attempt + 1), or "
        "nacks it when out of attempts; Dramatiq's heartbeat maintenance is off",
        "attempts, last error, retry due time: glue hashes keyed by Dramatiq's redis message id",
        "retry and reset: back to the queue front (LPUSH), not consumer.requeue (back)",
        "dedupe: hash (content_session_id, tool_use_id) -> id, reserved before and confirmed "
        "after Dramatiq's enqueue",
        "clear of pending only, depth, and a registry of queue names",
    )

    def __init__(
        self, url: str, *, poll_interval_s: float = POLL_INTERVAL_S, **options: Any
    ) -> None:
        poll_s = positive_seconds("poll_interval_s", poll_interval_s, at_most=0.2)
        super().__init__(url, **options)
        self._poll_interval_s, self._poll_max_ms = poll_s, to_ms(poll_s)
        self._reserve_ms = int(1000 * (2 * self._link.socket_timeout_s + 5))
        self._redis: redis.Redis[bytes] = self._link.client
        self._ns = f"obsq-dramatiq:{self.options.namespace}"
        self._broker = RedisBroker(  # type: ignore[no-untyped-call]
            client=self._redis, namespace=self._ns, middleware=[], maintenance_chance=0
        )
        self._actor: dramatiq.Actor[Any, Any] = dramatiq.actor(
            broker=self._broker, actor_name="record_observation", queue_name="obsq"
        )(tasks.record_observation)
        self._scripts = self._link.scripts("dramatiq", SCRIPTS)
        self._held: dict[str, tuple[int, MessageProxy]] = {}
        self._held_lock = threading.Lock()
        self._misses = threading.local()

    def _redis_url(self, url: str) -> str:
        scheme = url.partition("://")[0]
        if scheme.lower() != "dramatiq+redis":
            raise EngineUnavailableError(
                f"{redact_url(url)}: this engine implements dramatiq+redis:// only; "
                "use dramatiq+redis://host:port/db (dramatiq+amqp:// is DramatiqAmqpEngine)"
            )
        return super()._redis_url(url)

    # ------------------------------------------------------------------- errors and retries

    def _call(self, op: Callable[[], T], *, repeatable: bool) -> T:
        """The shared call loop (``RedisLink.call``), with Dramatiq's ``ConnectionClosed``
        unwrapped first (see ``_unwrap_closed``)."""
        return self._link.call(_unwrap_closed(op), repeatable=repeatable)

    def _run(
        self, name: str, queue: str, args: Sequence[object], *, repeatable: bool = False
    ) -> Any:
        script = self._scripts[name]
        argv = [self._ns, queue, *args]
        return self._call(lambda: script(keys=[], args=argv), repeatable=repeatable)

    # ------------------------------------------------------------------ Dramatiq's objects

    def _acks_key(self, queue: str) -> str:
        """The set Dramatiq's fetch adds this broker's in-flight message ids to."""
        return f"{self._ns}:__acks__.{self._broker.broker_id}.{queue}"

    def _consumer(self, queue: str) -> Any:
        return self._broker.consume(queue, prefetch=1, timeout=self._poll_max_ms)

    # --------------------------------------------------------------------------- primitives

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        queue = queue_name(session_id)
        tuid = message.tool_use_id
        field = "" if tuid is None else dedupe_field(content_session_id, tuid)
        message_id = self._reserve(queue, field)
        if message_id < 0:
            return EnqueueResult(-message_id, duplicate=True)
        envelope = tasks.observation_envelope(session_id, content_session_id, message)
        draft = self._actor.message_with_options(args=(envelope,), obsq_id=message_id)
        self._broker.declare_queue(queue)
        sent = self._call(
            lambda: self._broker.enqueue(draft.copy(queue_name=queue)), repeatable=False
        )
        if field:
            rid = sent.options["redis_message_id"]
            self._run("confirm", queue, [field, message_id, rid])
        return EnqueueResult(message_id)

    def _reserve(self, queue: str, field: str) -> int:
        """A new id, or minus the id of the queued message with the same dedupe key. Waits while
        another enqueue holds the key between reserve and confirm: at most until that
        reservation expires (``_reserve_ms``), plus ``connect_timeout_s``."""
        pause_s = 0.001
        give_up = time.monotonic() + self._reserve_ms / 1000 + self.options.connect_timeout_s
        while time.monotonic() < give_up:
            raw_id, verdict = self._run("reserve", queue, [field, self._reserve_ms])
            if verdict == b"new":
                return int(raw_id)
            if verdict == b"dup":
                return -int(raw_id)
            time.sleep(pause_s)  # another enqueue of this key is between reserve and confirm
            pause_s = min(pause_s * 2, 0.05)
        raise EngineUnavailableError(
            f"{redact_url(self.url)}: the dedupe key stayed reserved by another enqueue past its "
            "reservation; nothing was enqueued: retry"
        )

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        queue = queue_name(session_id)
        acks = self._acks_key(queue)
        consumer = storable(consumer_id)
        reply = self._run(
            "gate", queue, [acks, to_ms(lease_s), self.options.max_attempts, consumer]
        )
        if reply[0] != b"go":
            return None
        token = int(reply[1])
        dq_consumer = self._consumer(queue)
        proxy = self._call(lambda: next(dq_consumer), repeatable=False)
        if proxy is None:  # cleared between the gate and the fetch
            self._run("release", queue, [token, "", "acked", ""])
            return None
        rid = proxy.options["redis_message_id"]
        done = self._run("claimed", queue, [token, rid, acks])
        if done is None:
            return None
        if done[0] == b"kill":
            self._call(lambda: dq_consumer.nack(proxy), repeatable=False)
            self._run("release", queue, [token, rid, "dead", "lease expired on the last attempt"])
            return None
        with self._held_lock:
            self._held[session_id] = (token, proxy)
        self._misses.__dict__.pop(session_id, None)
        claim = (token, done[1], consumer)
        mid, enq = proxy.options["obsq_id"], proxy.message_timestamp
        return tasks.delivered_envelope(proxy.args[0], mid, done[0], claim, enq)

    def _fence(self, msg: PendingMessageWithId, mode: str, ms: int) -> tuple[str, Any]:
        """Check the claim (raising StaleClaimError) and set its lease; return (queue, reply)."""
        queue = queue_name(msg.session_id)
        reply = self._run("fence", queue, [claim_token(msg), mode, ms], repeatable=True)
        if reply is None:
            raise stale_claim(msg)
        return queue, reply

    def _proxy(self, msg: PendingMessageWithId, queue: str, rid: bytes) -> MessageProxy:
        """The Dramatiq message delivered under ``msg``'s claim: kept from the claim when this
        engine object made it, else read back from Dramatiq's hash."""
        with self._held_lock:
            token, proxy = self._held.get(msg.session_id, (None, None))
            if token == int(claim_token(msg)) and proxy is not None:
                del self._held[msg.session_id]
                return proxy
        key = f"{self._ns}:{queue}.msgs"
        data = self._call(lambda: self._redis.hget(key, rid), repeatable=True)
        if data is None:
            raise stale_claim(msg)
        return MessageProxy(Message.decode(data))

    def _settle(self, msg: PendingMessageWithId, outcome: str, reason: str) -> None:
        """Fence, then Dramatiq's consumer.ack (or nack), then release the glue."""
        queue, (rid, _lease, _consumer) = self._fence(msg, "pin", ACK_GRACE_MS)
        proxy = self._proxy(msg, queue, rid)
        dq_consumer = self._consumer(queue)
        settle = dq_consumer.ack if outcome == "acked" else dq_consumer.nack
        self._call(lambda: settle(proxy), repeatable=False)
        if not self._run("release", queue, [claim_token(msg), rid, outcome, reason]):
            raise stale_claim(msg)

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        self._settle(msg, "acked", "")

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        if not retry or self.out_of_attempts(msg.attempt):
            self._settle(msg, "dead", storable(reason))
            return
        queue = queue_name(msg.session_id)
        args = [claim_token(msg), self.retry_delay_ms(msg.attempt), storable(reason)]
        if self._run("requeue", queue, args) is None:
            raise stale_claim(msg)
        with self._held_lock:
            self._held.pop(msg.session_id, None)

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        _queue, (_rid, lease, consumer) = self._fence(msg, "extend", to_ms(lease_s))
        return Claim(int(claim_token(msg)), int(lease), consumer.decode())

    def _pending_count(self, session_id: str) -> int:
        key = f"{self._ns}:{queue_name(session_id)}.msgs"
        return int(self._call(lambda: self._redis.hlen(key), repeatable=True))

    def _total_depth(self) -> int:
        return int(self._run("depth", "", [], repeatable=True))

    def _clear_pending(self, session_id: str) -> int:
        return int(self._run("clear", queue_name(session_id), []))

    def _reset_processing(self, session_id: str | None) -> int:
        queue = "" if session_id is None else queue_name(session_id)
        return int(self._run("reset", queue, []))

    # ------------------------------------------------------------------------------ wakeup

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        """Dramatiq's consumer poll: sleep ``compute_backoff(misses)`` after an empty claim,
        5 ms doubling (jittered) up to ``poll_interval_s``; woken early by enqueues made through
        this engine object."""
        misses = self._misses.__dict__.get(session_id, 0)
        misses, backoff_ms = dramatiq.common.compute_backoff(misses, max_backoff=self._poll_max_ms)
        self._misses.__dict__[session_id] = misses
        super()._wait_for_work(session_id, min(timeout_s, backoff_ms / 1000), mark)

    # ------------------------------------------------------------- oracle, describe, destroy

    def inspect_raw(self) -> list[RawMessage]:
        """Every stored message, read from Dramatiq's lists, hashes and dead-letter hashes and
        the glue hashes in one MULTI snapshot; Dramatiq's ``Message.decode`` decodes each."""
        self._check_open()
        return self._call(self._read_all, repeatable=True)

    def _read_all(self) -> list[RawMessage]:
        glue = f"{self._ns}:__obsq__:"
        queues = sorted(q.decode() for q in self._redis.smembers(glue + "queues"))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(glue + "attempts")
        pipe.hgetall(glue + "errors")
        for q in queues:
            pipe.lrange(f"{self._ns}:{q}", 0, -1)
            pipe.hgetall(f"{self._ns}:{q}.msgs")
            pipe.hgetall(f"{self._ns}:{q}.XQ.msgs")
            pipe.hgetall(f"{glue}gate:{q}")
        replies = pipe.execute()
        attempts, errors = replies[0], replies[1]
        rows: list[RawMessage] = []
        for i in range(len(queues)):
            pending, live, dead, gate = replies[2 + 4 * i : 6 + 4 * i]
            pending_set = set(pending)
            for rid, data in live.items():
                status: MessageStatus = "pending" if rid in pending_set else "processing"
                claim = gate if status == "processing" and gate.get(b"rid") == rid else {}
                rows.append(_raw(data, status, attempts.get(rid), errors.get(rid), claim))
            for rid, data in dead.items():
                rows.append(_raw(data, "dead", attempts.get(rid), errors.get(rid), {}))
        return sorted(rows, key=lambda r: r.id)

    def describe(self) -> dict[str, Any]:
        self._check_open()
        client = {
            "broker": "dramatiq.brokers.redis.RedisBroker",
            "broker_namespace": self._ns,
            "maintenance_chance": self._broker.maintenance_chance,
            "heartbeat_timeout_ms": self._broker.heartbeat_timeout,
            "poll_interval_s": self._poll_interval_s,
        }
        return {
            **self._link.describe("dramatiq", aof_fallback=False, **client),
            "glue": list(self.glue),
        }

    def destroy(self) -> None:
        """Delete every key of the engine's Dramatiq namespace: queues, message hashes, acks
        sets, heartbeats, dead letters, and the glue."""
        self._check_open()
        self._call(lambda: unlink_matching(self._redis, f"{self._ns}:*"), repeatable=True)

    def _close(self) -> None:
        self._link.close()


# ---------------------------------------------------------------------- small conversions


def _raw(
    data: bytes,
    status: MessageStatus,
    attempt: bytes | None,
    error: bytes | None,
    gate: dict[bytes, bytes],
) -> RawMessage:
    message = Message.decode(data)
    claim = (gate[b"token"], gate[b"lease"]) if gate else (None, None)
    mid = message.options["obsq_id"]
    return tasks.stored_envelope(message.args[0], mid, status, attempt, claim, error)


def _unwrap_closed(op: Callable[[], T]) -> Callable[[], T]:
    """``op``, raising the redis-py error inside a Dramatiq ``ConnectionClosed`` (Dramatiq's
    broker wraps it), or ``NotSentError`` when there is none (the connection was gone before
    the command was sent), so ``RedisLink.call`` judges it like any other Redis error."""

    def run() -> T:
        try:
            return op()
        except dramatiq.errors.ConnectionClosed as closed:
            inner = closed.message
            if isinstance(inner, Exception):
                raise inner from closed
            raise NotSentError(str(closed)) from closed

    return run
