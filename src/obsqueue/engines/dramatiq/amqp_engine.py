"""``dramatiq+amqp://user:pass@host:port/vhost`` — observations as Dramatiq messages on RabbitMQ.

What Dramatiq (2.2) on RabbitMQ gives, used through its public ``RabbitmqBroker`` API:

* **Messages and durability.** One ``RabbitmqBroker(confirm_delivery=True, middleware=[])`` per
  engine, an actor ``record_observation`` (:func:`obsqueue.engines.tasks.record_observation`)
  registered on it, and one Dramatiq queue per session (``obsq-<ns>-s_<session>``, with
  Dramatiq's ``.DQ`` and ``.XQ``): durable queues, persistent messages (``delivery_mode=2``) and
  publisher confirms — ``enqueue`` returns once RabbitMQ confirmed the message, which for a
  persistent message on a durable queue means it was written to disk.
* **Delivery.** ``broker.consume(queue, prefetch=1, timeout=…)``: RabbitMQ *pushes* the
  head to the consumer; it stays unacknowledged (in flight) until ``consumer.ack``, or until the
  consumer's connection dies, when RabbitMQ puts it back at its place. ``consumer.nack`` sends it
  to Dramatiq's dead-letter queue (``.XQ``): the contract's *dead* state (RabbitMQ dead-letters
  asynchronously, so for a moment after ``mark_failed`` returns the oracle may not see it).
  Wakeup is that push: a blocked iterator gets a new message as soon as RabbitMQ sends it.

What obsqueue adds (``DramatiqAmqpEngine.glue``):

* **One consumer per session across processes**: the queue is declared with
  ``x-single-active-consumer`` (a one-method subclass of ``RabbitmqBroker`` adds it to Dramatiq's
  queue arguments, which Dramatiq offers no public option for), so with ``prefetch=1`` at most one
  message of a session is in flight anywhere; inside one engine a lock per session does the same
  between threads. An engine keeps its session consumers open until ``close()``.
* **Acks that have taken effect**: Dramatiq's ``consumer.ack``/``nack`` only *schedule*
  ``basic.ack``/``basic.nack`` on the consumer's connection (a Dramatiq worker's loop sends them
  later), and AMQP 0-9-1 has no reply to either; the adapter drives the connection until a
  marker callback scheduled after it has run, then makes one synchronous round trip on the
  consumer's channel (``basic.qos``), so when ``mark_processed`` returns RabbitMQ has
  processed the ack.
* **Ids**: time-based (``microseconds << 12 | 12 random bits``, increasing within an engine),
  stored as the Dramatiq message option ``obsq_id``; RabbitMQ has no counter.
* **Attempts, retries, reset**: counted by the engine object that holds the session's consumer.
  A retry (or a reset) keeps the unacked message in that consumer and hands it out again after
  the backoff with ``attempt + 1`` — so it keeps its place.
* **A registry of queue names** (durable queue ``obsq-<ns>.__queues__``): RabbitMQ cannot list
  queues without its management plugin; depth, the oracle and ``destroy`` read it.
* **Clear of pending only**: ``queue.purge`` of the session queue (Dramatiq's ``flush`` would
  purge the dead letters too); a message this engine prefetched but did not hand out is given
  back first.

Unsupported, because RabbitMQ/Dramatiq cannot give it to a per-session stream:

* dedupe (P3): RabbitMQ has no keyed lookup of queued messages;
* stall recovery and fencing (P7, P8): RabbitMQ redelivers only when the holder's connection or
  channel dies (TCP close, or missed heartbeats — the URL's ``heartbeat``), not after a lease;
  a frozen consumer's claim is recovered after the heartbeat timeout, but attempts are counted
  per engine object (classic queues carry only a ``redelivered`` flag), so a redelivered
  message starts again at ``attempt`` 1;
* bounded retries (P15) for the same reason: an attempt count does not survive its consumer;
* startup recovery (P6): another connection's unacked messages cannot be seen or returned;
  RabbitMQ returns them itself when that connection dies, so ``reset_processing_to_pending``
  resets only this engine's claims;
* exact depth (P11) and clear (P12): messages unacked on another connection (including one
  prefetched but not yet handed out) are not in ``queue.declare``'s count nor purgeable;
* server-crash durability (P4/P5 across kill -9 of the node): publishes are confirmed after
  fsync, but acks are not, so an acknowledged message may come back after a crash.

The oracle (``inspect_raw``): ``basic.get`` of every ready message of each queue and dead-letter
queue on a fresh channel, then closing the channel, which puts them all back at their places
(they come back marked ``redelivered``; the adapter does not read that flag), plus this engine's
own unacked messages. Messages unacked on other connections are not visible. Leases are not
enforced: ``extend_lease`` drives the consumer's connection (its heartbeats). Engine options:
``poll_interval_s`` (how long one fetch waits, default 0.05, at most 0.2).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, ClassVar
from urllib.parse import urlsplit

import dramatiq
import dramatiq.errors
import pika
import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.common import xq_name
from dramatiq.message import Message
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from obsqueue.engines import tasks
from obsqueue.engines.base import ObservationQueueEngine, PendingMessageWithId, RawMessage, now_ms
from obsqueue.engines.dramatiq.queues import amqp_queue_name
from obsqueue.engines.dramatiq.rabbitmq import SingleActiveBroker, message_count, snapshot
from obsqueue.engines.options import positive_seconds, to_ms
from obsqueue.engines.types import Capability, Claim, EnqueueResult, MessageStatus, PendingMessage
from obsqueue.errors import EngineUnavailableError, redact_url, stale_claim

__all__ = ["DramatiqAmqpEngine", "amqp_queue_name"]

_STALE_HERE = (
    "it is not held in this engine (reset, or its connection to RabbitMQ was lost and "
    "RabbitMQ requeued it)"
)
_AMQP_ERRORS = (
    dramatiq.errors.ConnectionClosed,
    pika.exceptions.AMQPError,
    AMQPConnectorException,  # pika's connection workflow (e.g. a handshake timeout)
    OSError,
)


@dataclass
class _Session:
    """This engine's consumer of one session and the message it holds (unacked)."""

    queue: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    consumer: Any = None
    proxy: MessageProxy | None = None
    token: int | None = None
    attempt: int = 0
    due_ms: int = 0


class DramatiqAmqpEngine(ObservationQueueEngine):
    """Sessions as Dramatiq queues on RabbitMQ; see the module docstring for the glue."""

    scheme: ClassVar[str] = "dramatiq+amqp"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.FIFO,
            Capability.EXCLUSIVE_SESSION,
            Capability.MULTI_PROCESS,
            Capability.DURABLE_ENQUEUE,
            Capability.DURABLE_PROCESSING,
            Capability.FAST_WAKEUP,
            Capability.FIDELITY,
            Capability.STOP_AND_IDLE,
            Capability.INPUT_VALIDATION,
            Capability.CLOSE,
        }
    )
    server_kind: ClassVar[str | None] = "rabbitmq"
    glue: ClassVar[tuple[str, ...]] = (
        "one consumer per session: x-single-active-consumer added to Dramatiq's queue arguments "
        "(prefetch=1), and a lock per session between threads",
        "acks that took effect: drive Dramatiq's scheduled basic.ack/nack out (marker callback), "
        "then a basic.qos round trip",
        "message ids: time-based (us << 12 | random), stored as Dramatiq option obsq_id",
        "attempts, retry backoff and reset: counted by the engine holding the session's consumer; "
        "the unacked message is handed out again, so it keeps its place",
        "a registry of queue names (durable queue <ns>.__queues__): no management API",
        "clear of pending only: queue.purge of the session queue, not Dramatiq's flush",
        "oracle: basic.get of every ready and dead message, then channel close (requeue)",
    )

    def __init__(self, url: str, *, poll_interval_s: float = 0.05, **options: Any) -> None:
        super().__init__(url, **options)
        self._poll_interval_s = positive_seconds("poll_interval_s", poll_interval_s, at_most=0.2)
        self._poll_ms = to_ms(self._poll_interval_s)
        self._amqp_url = self._server_url(url)
        self._ns = self.options.namespace
        self._registry = f"obsq-{self._ns}.__queues__"
        with self._boundary("connect"):
            pika.BlockingConnection(pika.URLParameters(self._amqp_url)).close()
        self._broker = SingleActiveBroker(url=self._amqp_url, confirm_delivery=True, middleware=[])
        self._actor: dramatiq.Actor[Any, Any] = dramatiq.actor(
            broker=self._broker, actor_name="record_observation", queue_name="obsq"
        )(tasks.record_observation)
        self._sessions: dict[str, _Session] = {}
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self._tokens = itertools.count(random.getrandbits(32))
        self._last_id = 0
        self._errors: dict[int, str] = {}

    def _server_url(self, url: str) -> str:
        scheme, _, rest = url.partition("://")
        if scheme.lower() != self.scheme or not urlsplit(url).hostname:
            raise EngineUnavailableError(
                f"{redact_url(url)}: expected dramatiq+amqp://user:pass@host:port/vhost"
            )
        timeout = self.options.connect_timeout_s
        joiner = "&" if "?" in rest else "?"
        return (
            f"amqp://{rest}{joiner}connection_attempts=1&socket_timeout={timeout}"
            f"&stack_timeout={timeout}&blocked_connection_timeout={max(timeout, 30)}"
        )

    # ------------------------------------------------------------------ errors, boundary

    @contextlib.contextmanager
    def _boundary(self, what: str, session: _Session | None = None) -> Iterator[None]:
        """Translate pika/Dramatiq errors once: EngineUnavailableError, password redacted; a
        broken session consumer is dropped (RabbitMQ requeues what it held)."""
        try:
            yield
        except _AMQP_ERRORS as exc:
            if session is not None:
                self._drop_consumer(session)
            with contextlib.suppress(Exception):
                del self._broker.connection
            raise EngineUnavailableError(
                f"{redact_url(self.url)}: {what} failed ({type(exc).__name__}: "
                f"{redact_url(str(exc))}); is RabbitMQ running? the outcome may be unknown"
            ) from exc

    def _drop_consumer(self, st: _Session) -> None:
        consumer, st.consumer, st.proxy, st.token = st.consumer, None, None, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()

    def _session(self, session_id: str) -> _Session:
        with self._lock:
            st = self._sessions.get(session_id)
            if st is None:
                st = self._sessions[session_id] = _Session(amqp_queue_name(self._ns, session_id))
            return st

    def _all_sessions(self) -> list[_Session]:
        with self._lock:
            return list(self._sessions.values())

    def _sessions_with_work(self) -> list[str]:
        """The oracle's sessions and every session this engine has a consumer on: a message
        its consumer has prefetched is out of the queue, so the oracle alone misses it."""
        with self._lock:
            own = set(self._sessions)
        return sorted(own | set(super()._sessions_with_work()))

    # --------------------------------------------------------------------------- primitives

    def _next_id(self) -> int:
        with self._lock:
            self._last_id = max(
                self._last_id + 1, (time.time_ns() // 1000) << 12 | random.getrandbits(12)
            )
            return self._last_id

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        queue = amqp_queue_name(self._ns, session_id)
        message_id = self._next_id()
        envelope = tasks.observation_envelope(session_id, content_session_id, message)
        draft = self._actor.message_with_options(args=(envelope,), obsq_id=message_id)
        with self._boundary("enqueue"):
            self._register(queue)
            self._broker.enqueue(draft.copy(queue_name=queue))
        return EnqueueResult(message_id)

    def _register(self, queue: str) -> None:
        with self._lock:
            if queue in self._known:
                return
        channel = self._broker.channel
        channel.queue_declare(self._registry, durable=True)
        channel.basic_publish(
            "", self._registry, queue.encode(), pika.BasicProperties(delivery_mode=2)
        )
        with self._lock:
            self._known.add(queue)

    def _fetch(self, st: _Session) -> MessageProxy | None:
        """One fetch from this engine's Dramatiq consumer of the session (≤ ``poll_interval_s``)."""
        with self._boundary("consume", st):
            if st.consumer is None:
                self._broker.declare_queue(st.queue)
                st.consumer = self._broker.consume(st.queue, prefetch=1, timeout=self._poll_ms)
            proxy: MessageProxy | None = next(st.consumer)
        if proxy is not None:
            st.proxy, st.attempt, st.due_ms = proxy, 0, 0
        return proxy

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        st = self._session(session_id)
        with st.lock:
            if st.token is not None:
                return None
            if st.proxy is None and self._fetch(st) is None:
                return None
            if now_ms() < st.due_ms:
                return None
            assert st.proxy is not None
            st.attempt += 1
            st.token = next(self._tokens)
            claim = (st.token, now_ms() + int(lease_s * 1000), consumer_id)
            mid, enq = st.proxy.options["obsq_id"], st.proxy.message_timestamp
            return tasks.delivered_envelope(st.proxy.args[0], mid, st.attempt, claim, enq)

    def _held(self, msg: PendingMessageWithId) -> _Session:
        """The session, if ``msg``'s claim still holds in this engine (call under its lock)."""
        st = self._session(msg.session_id)
        if msg.claim is None or st.token != msg.claim.token or st.proxy is None:
            raise stale_claim(msg, _STALE_HERE)
        return st

    def _settle(self, msg: PendingMessageWithId, dead: bool) -> None:
        st = self._session(msg.session_id)
        with st.lock:
            self._held(msg)
            with self._boundary("acknowledge", st):
                proxy = st.proxy
                (st.consumer.nack if dead else st.consumer.ack)(proxy)
                self._flush(st.consumer)
            st.proxy, st.token = None, None

    def _flush(self, consumer: Any) -> None:
        """Run the ``basic.ack``/``basic.nack`` Dramatiq scheduled (callbacks run in order, so a
        marker callback after it tells when it was sent; Dramatiq's ``close`` waits the same
        way), then one round trip (``basic.qos``) so RabbitMQ has processed it."""
        sent = threading.Event()
        consumer.connection.add_callback_threadsafe(sent.set)
        deadline = time.monotonic() + self.options.connect_timeout_s
        while not sent.is_set():
            if time.monotonic() > deadline:
                raise pika.exceptions.AMQPConnectionError("the ack was not sent in time")
            consumer.connection.process_data_events(time_limit=0.01)
        consumer.channel.basic_qos(prefetch_count=1)

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        self._settle(msg, dead=False)

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        if not retry or self.out_of_attempts(msg.attempt):
            self._settle(msg, dead=True)
            self._errors[msg.id] = reason
            return
        st = self._session(msg.session_id)
        with st.lock:
            self._held(msg)
            st.token, st.due_ms = None, now_ms() + self.retry_delay_ms(msg.attempt)
            self._errors[msg.id] = reason

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        st = self._session(msg.session_id)
        with st.lock:
            self._held(msg)
            with self._boundary("heartbeat", st):
                st.consumer.connection.process_data_events(time_limit=0)
            assert msg.claim is not None
            return Claim(msg.claim.token, now_ms() + int(lease_s * 1000), msg.claim.consumer_id)

    def _ready(self, queue: str) -> int:
        """Ready messages of a queue (0 if it does not exist), by a passive declare."""
        return message_count(
            self._broker, lambda: self._broker.channel.queue_declare(queue, passive=True)
        )

    def _pending_count(self, session_id: str) -> int:
        st = self._session(session_id)
        with self._boundary("count"):
            return self._ready(st.queue) + (st.proxy is not None)

    def _total_depth(self) -> int:
        with self._boundary("count"):
            queues = self._queues()
            held = sum(st.proxy is not None for st in self._all_sessions())
            return sum(self._ready(q) for q in queues) + held

    def _clear_pending(self, session_id: str) -> int:
        st = self._session(session_id)
        with st.lock:
            if st.proxy is not None and st.token is None:
                self._drop_consumer(st)  # prefetched or waiting to retry: pending, give it back
            with self._boundary("clear"):
                return message_count(
                    self._broker, lambda: self._broker.channel.queue_purge(st.queue)
                )

    def _reset_processing(self, session_id: str | None) -> int:
        moved = 0
        for st in self._all_sessions():
            if session_id is not None and st.queue != amqp_queue_name(self._ns, session_id):
                continue
            with st.lock:
                if st.token is not None:
                    st.token, st.due_ms = None, 0
                    moved += 1
        return moved

    # ------------------------------------------------------------------------------ wakeup

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        """Wait on the session's consumer: RabbitMQ pushes the next message to it."""
        st = self._session(session_id)
        deadline = time.monotonic() + timeout_s
        with st.lock:
            if st.proxy is not None or st.token is not None:
                pass
            else:
                while time.monotonic() < deadline and not self.closed:
                    if self._fetch(st) is not None:
                        return
                return
        super()._wait_for_work(session_id, max(0.0, deadline - time.monotonic()), mark)

    # ------------------------------------------------------------- oracle, describe, destroy

    def _queues(self) -> set[str]:
        """Queue names from the registry (read and put back) and this engine's own."""
        names = {raw.decode() for raw, _redelivered in snapshot(self._broker, self._registry)}
        with self._lock:
            self._known |= names
            return set(self._known)

    def inspect_raw(self) -> list[RawMessage]:
        self._check_open()
        rows: list[RawMessage] = []
        with self._boundary("inspect"):
            for queue in sorted(self._queues()):
                for body, _ in snapshot(self._broker, queue):
                    rows.append(self._raw(Message.decode(body), "pending", 0))
                for body, _ in snapshot(self._broker, xq_name(queue)):
                    rows.append(self._raw(Message.decode(body), "dead", 0))
        for st in self._all_sessions():
            proxy = st.proxy
            if proxy is not None:
                status: MessageStatus = "processing" if st.token is not None else "pending"
                rows.append(self._raw(proxy._message, status, st.attempt, st.token))
        return sorted(rows, key=lambda r: r.id)

    def _raw(
        self, message: Message[Any], status: MessageStatus, attempt: int, token: int | None = None
    ) -> RawMessage:
        mid = int(message.options["obsq_id"])
        error = self._errors.get(mid)
        return tasks.stored_envelope(message.args[0], mid, status, attempt, (token, None), error)

    def describe(self) -> dict[str, Any]:
        self._check_open()
        with self._boundary("describe"):
            props = self._broker.connection._impl.server_properties
        server = {k: v.decode() if isinstance(v, bytes) else v for k, v in props.items()}
        return {
            "engine": self.scheme,
            "url": redact_url(self.url),
            "library": {"dramatiq": dramatiq.__version__},
            "client": {
                "pika": version("pika"),
                "broker": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
                "prefetch": 1,
                "poll_interval_s": self._poll_interval_s,
            },
            "server": {"product": server.get("product"), "version": server.get("version")},
            "durability": {
                "durable_queues": True,
                "persistent_messages": True,
                "publisher_confirms": self._broker.confirm_delivery,
                "acks": "processed by the server before mark_processed returns; not fsynced",
                "server_crash_durable": False,
            },
            "glue": list(self.glue),
        }

    def destroy(self) -> None:
        """Delete every queue of the engine's namespace (with .DQ and .XQ) and the registry."""
        self._check_open()
        for st in self._all_sessions():
            with st.lock:
                self._drop_consumer(st)
        with self._boundary("destroy"):
            channel = self._broker.channel
            for queue in sorted(self._queues()):
                for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                    channel.queue_delete(name)
            channel.queue_delete(self._registry)
        with self._lock:
            self._known.clear()

    def _close(self) -> None:
        for st in self._all_sessions():
            with st.lock:
                self._drop_consumer(st)
        with contextlib.suppress(Exception):
            self._broker.close()
