"""``rq+redis://host:port/db`` — observations as RQ jobs, with the glue RQ lacks for the contract.

What RQ (3.0) gives, used through its public API the way its users use it:

* **Jobs.** Each message is an RQ job naming ``obsqueue.engines.tasks.record_observation`` with
  the observation envelope as its argument, built by ``Queue.create_job`` (``result_ttl=0``,
  ``failure_ttl=-1``) with RQ's ``JSONSerializer``; its id is ``f"{namespace}-{message_id}"``.
  ``Job.fetch`` reads it back; ``rq info`` and RQ's registries see it.
* **FIFO.** One RQ ``Queue`` per session, named ``obsq:<namespace>:<session>``: pending jobs are
  RQ's queue list, oldest first.
* **In flight.** The session queue's ``StartedJobRegistry``, with RQ's ``<job id>:<execution id>``
  entries; the entry's score is the lease's end (epoch seconds, as RQ scores executions).
* **Dead.** The session queue's ``FailedJobRegistry`` (score +inf, as for ``failure_ttl=-1``),
  job status ``failed``. Acknowledged jobs are deleted, as RQ does for ``result_ttl=0``.
* **Status.** The job hash's ``status``: ``queued`` / ``started`` / ``failed``.

What obsqueue adds (``RqEngine.glue``), in Redis, each state change one small Lua script
(``engines/redis/lua/rq_*.lua``) over RQ's own keys and a few glue keys under
``obsq-rq:<namespace>:``:

* **Ids**: an INCR counter. The enqueue script allocates the id, saves the fields of RQ's
  ``Job.to_dict()`` and RPUSHes the job in one step (the pattern of RQ's own unique-enqueue
  script), so ids follow queue order even with many producers.
* **The per-session gate**: the claim script pops the queue's head (LPOP, what
  ``Queue.pop_job_id`` runs) only while the session's StartedJobRegistry is empty, and in the
  same atomic step adds the started entry; then ``Job.fetch`` reads the job. obsqueue's iterator
  replaces RQ's ``Worker`` loop: consumers pull through the contract; no RQ worker runs.
* **Leases and fencing**: the token of a claim is its RQ execution id, from an INCR counter; a
  claim holds while its ``<job id>:<token>`` entry is in StartedJobRegistry. Acks, failures and
  extensions check that entry in the same script.
* **Stall recovery**: a started entry whose lease ran out is claimed again by the next claim
  (attempt + 1, new token), or on its last attempt moved to FailedJobRegistry.
* **Attempts, retry due time, consumer, last error**: a glue hash per message.
* **Retry and reset keep the place**: the job goes back to the *front* of its queue (LPUSH, RQ's
  ``at_front``), due after the backoff.
* **Dedupe**: a hash from ``(content_session_id, tool_use_id)`` to the id, held while the job is
  queued or started; an O(1) **depth** counter; an **in-flight set** (reset of every session);
  a **wake list** per session that a blocked consumer in another process BLPOPs.

Why not more of RQ (real differences, for the scorecard):

* RQ 3.0's concurrency-limited key (``RateLimit(key, concurrency=1)``) does not serve as the gate:
  waiting jobs are ordered by ``current_timestamp()`` — whole seconds of the producer's clock —
  with ties broken by job id as text, so ``ns-10`` is promoted before ``ns-9`` (the test
  ``test_rq_rate_limit_would_reorder_a_session`` shows it); a slot is held while the job is
  queued *or* executing and is freed by the worker or its maintenance; a requeued job waits
  again by timestamp, behind the others. RQ also refuses ``unique=True`` on rate-limited jobs.
* RQ's ``unique=True`` dedupes on the job id, which here is the message id; it cannot express
  "same (content_session_id, tool_use_id) while pending or in flight".
* RQ's ``Retry`` puts a failed job back at the front only without an interval (and with
  ``enqueue_at_front``); with an interval the job waits off the queue in ScheduledJobRegistry for
  an RQ scheduler, so the session's next job would run first.
* RQ recovers an abandoned job only when something runs ``StartedJobRegistry.cleanup`` (a
  worker's maintenance), on whole-second scores: it fails the job, or with ``Retry`` re-enqueues
  it as above. RQ has no fencing: a worker's success is recorded whether or not its execution
  was meanwhile declared abandoned (``handle_job_success`` WATCHes only the dependents key).
* So: do not run RQ workers, ``rq requeue`` or registry maintenance on these queues. A worker
  would bypass the gate; cleanup would fail a stalled claim instead of re-delivering it. The
  claim script sets aside, into FailedJobRegistry, a job in the queue that obsqueue did not
  enqueue, and leaves a started entry it did not write to RQ.

Durability: every piece of state — RQ's and the glue — lives in Redis and is written by one script
before the call returns. In the durable configuration (``appendonly yes``, ``appendfsync
always``) Redis fsyncs the AOF before it replies, so a returned enqueue or ack survives kill -9 of
the server (P4, P5); ``describe()`` reads the settings from the live server. Leases use the
server's clock (``TIME`` in the scripts). With this glue every capability holds, so all are
declared; ``SERVER_CRASH_DURABLE`` only in the durable configuration, as for ``redis://``.

Connection errors are handled as in the native engine: only reads, lease extension and commands
that failed before they were sent are retried (for at most ``connect_timeout_s``); otherwise
``EngineUnavailableError`` says the outcome is unknown. Claims are not renewed automatically: a
consumer that may outlive its lease calls ``extend_lease(msg)``. Single-node Redis >= 6.0 only
(fractional BLPOP timeouts; RQ's keys carry no hash tags). Engine options: ``socket_timeout_s``,
``max_connections``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now

from obsqueue.engines import tasks
from obsqueue.engines.base import PendingMessageWithId, RawMessage
from obsqueue.engines.options import to_ms
from obsqueue.engines.redis.family import RedisBacked
from obsqueue.engines.redis.link import claim_token, scan_keys, storable, unlink_matching
from obsqueue.engines.types import Capability, Claim, EnqueueResult, MessageStatus, PendingMessage
from obsqueue.errors import stale_claim

__all__ = ["RqEngine"]

SCRIPTS = ("enqueue", "claim", "ack", "fail", "extend", "reset", "clear")
_STATUS: dict[str, MessageStatus] = {"queued": "pending", "started": "processing", "failed": "dead"}


class RqEngine(RedisBacked):
    """Sessions as RQ queues, messages as RQ jobs; obsqueue's glue adds the gate, leases,
    fencing, attempts, dedupe and ids (see the module docstring)."""

    scheme: ClassVar[str] = "rq+redis"
    # Every property holds with the glue; SERVER_CRASH_DURABLE in the durable configuration only
    # (appendfsync always): describe()["durability"]["server_crash_durable"] says which is live.
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    glue: ClassVar[tuple[str, ...]] = (
        "message ids: INCR counter, RQ job id '<namespace>-<id>'",
        "atomic enqueue: one Lua script allocates the id, saves Job.to_dict() and RPUSHes",
        "per-session gate: pop the queue head only while its StartedJobRegistry is empty",
        "leases: StartedJobRegistry scores in ms on the server clock, renewable",
        "fencing: token = RQ execution id from an INCR counter, checked in every ack script",
        "stall recovery: claim re-takes an expired started job (attempt+1) or fails it",
        "attempts, retry due time, consumer, last error: a glue hash per message",
        "retry and reset: back to the queue front (LPUSH) with a due time, not RQ's Retry",
        "dedupe: hash (content_session_id, tool_use_id) -> id while queued or started",
        "depth counter and in-flight id set",
        "wakeup: a wake list per session, BLPOP by blocked consumers",
    )

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._redis: redis.Redis[bytes] = self._link.client
        ns = self.options.namespace
        self._queue_prefix = f"obsq:{ns}:"  # an RQ queue name is this prefix + the session id
        self._glue_prefix = f"obsq-rq:{ns}:"
        self._layout = (  # ARGV[1..6] of every script, as rq_common.lua reads them
            self._glue_prefix,
            Job.redis_job_namespace_prefix,
            f"{ns}-",
            Queue.redis_queue_namespace_prefix + self._queue_prefix,
            StartedJobRegistry(self._queue_prefix, connection=self._redis).key,
            FailedJobRegistry(self._queue_prefix, connection=self._redis).key,
        )
        self._scripts = self._link.scripts("rq", SCRIPTS)

    # ------------------------------------------------------------------------------ scripts

    def _run(self, name: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        """Run a state-changing script once (its reply may be lost after it ran)."""
        script = self._scripts[name]
        argv = [*self._layout, *args]
        return self._link.call(lambda: script(keys=list(keys), args=argv), repeatable=False)

    # ------------------------------------------------------------------------ RQ's objects

    def _queue(self, session_id: str) -> Queue:
        return Queue(self._queue_prefix + session_id, self._redis, serializer=JSONSerializer)

    def _session_keys(self, session_id: str) -> list[str]:
        """The session's RQ queue key and its StartedJobRegistry key, as RQ names them."""
        queue = self._queue(session_id)
        return [queue.key, queue.started_job_registry.key]

    def _job_id(self, message_id: int) -> str:
        return f"{self.options.namespace}-{message_id}"

    def _key(self, name: object) -> str:
        return f"{self._glue_prefix}{name}"

    # --------------------------------------------------------------------------- primitives

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        queue = self._queue(session_id)
        envelope = tasks.observation_envelope(session_id, content_session_id, message)
        job = queue.create_job(
            tasks.record_observation,
            args=(envelope,),
            result_ttl=0,  # processed = deleted
            failure_ttl=-1,  # dead = kept
            description=f"obsqueue {message.kind}",
        )
        job.enqueued_at = rq_now()
        fields = [part for k, v in job.to_dict().items() if v is not None for part in (k, v)]
        keys = [queue.key, Queue.redis_queues_keys]
        args = [session_id, content_session_id, message.tool_use_id or "", *fields]
        message_id, duplicate = self._run("enqueue", keys, args)
        return EnqueueResult(int(message_id), duplicate=bool(duplicate))

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        consumer = storable(consumer_id)
        args = [session_id, consumer, to_ms(lease_s), self.options.max_attempts]
        reply = self._run("claim", self._session_keys(session_id), args)
        if reply is None:
            return None
        message_id, attempt, token, lease = (int(part) for part in reply)
        job = self._fetch(message_id)
        if job is None:  # acked under a later claim between the two calls: ours is void
            return None
        claim = (token, lease, consumer)
        return tasks.delivered_envelope(
            job.args[0], message_id, attempt, claim, _epoch_ms(job.enqueued_at)
        )

    def _fetch(self, message_id: int) -> Job | None:
        def fetch() -> Job | None:
            try:
                return Job.fetch(
                    self._job_id(message_id), connection=self._redis, serializer=JSONSerializer
                )
            except NoSuchJobError:
                return None

        return self._link.call(fetch, repeatable=True)

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        if not self._run("ack", [], [msg.id, claim_token(msg)]):
            raise stale_claim(msg)

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        args = [
            msg.id,
            claim_token(msg),
            storable(reason),
            int(retry),
            self.retry_delay_ms(msg.attempt),
            self.options.max_attempts,
        ]
        if not self._run("fail", [], args):
            raise stale_claim(msg)

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        script = self._scripts["extend"]
        args = [*self._layout, msg.id, claim_token(msg), to_ms(lease_s)]
        reply = self._link.call(lambda: script(keys=[], args=args), repeatable=True)
        if reply is None:
            raise stale_claim(msg)
        return Claim(int(claim_token(msg)), int(reply[0]), (reply[1] or b"").decode())

    def _pending_count(self, session_id: str) -> int:
        queue_key, started_key = self._session_keys(session_id)

        def count() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.llen(queue_key)
            pipe.zcard(started_key)
            return sum(int(n) for n in pipe.execute())

        return self._link.call(count, repeatable=True)

    def _total_depth(self) -> int:
        depth = self._link.call(lambda: self._redis.get(self._key("depth")), repeatable=True)
        return max(0, int(depth or 0))

    def _clear_pending(self, session_id: str) -> int:
        queue_key = self._session_keys(session_id)[0]
        return int(self._run("clear", [queue_key], [session_id]))

    def _reset_processing(self, session_id: str | None) -> int:
        return int(self._run("reset", [], [session_id or ""]))

    # ------------------------------------------------------------------------------ wakeup

    def _wakeup_mark(self, session_id: str) -> object:
        return None  # the wake list itself remembers a wake that comes before the wait

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        if not self._closed:
            self._link.wait_for_wake(self._key(f"w:{session_id}"), timeout_s)

    # ------------------------------------------------------------- oracle, describe, destroy

    def inspect_raw(self) -> list[RawMessage]:
        """Every stored message, read from RQ's job hashes and registries plus the glue hashes
        in one MULTI snapshot; RQ's ``Job.restore`` decodes each job."""
        self._check_open()
        return self._link.call(self._read_all, repeatable=True)

    def _read_all(self) -> list[RawMessage]:
        start = len(self._key("m:"))
        ids = sorted(int(k[start:]) for k in scan_keys(self._redis, self._key("m:*")))
        pipe = self._redis.pipeline(transaction=False)
        for message_id in ids:
            pipe.hget(self._key(f"m:{message_id}"), "session")  # never changes
        sessions = {s.decode() for s in pipe.execute() if s is not None}
        pipe = self._redis.pipeline(transaction=True)
        for message_id in ids:
            pipe.hgetall(self._key(f"m:{message_id}"))
            pipe.hgetall(Job.key_for(self._job_id(message_id)))
        for session in sorted(sessions):
            pipe.zrange(self._session_keys(session)[1], 0, -1, withscores=True)
        replies = pipe.execute()
        claims = {}
        for entries in replies[2 * len(ids) :]:
            for member, score in entries:
                job_id, _, token = member.decode().rpartition(":")
                if token.isdigit():  # an execution obsqueue did not start has another id
                    claims[job_id] = (int(token), round(score * 1000))
        rows = zip(ids, replies[0 : 2 * len(ids) : 2], replies[1 : 2 * len(ids) : 2], strict=True)
        return [self._raw(i, g, h, claims) for i, g, h in rows if g and h]

    def _raw(
        self,
        message_id: int,
        glue: dict[bytes, bytes],
        job_hash: dict[bytes, bytes],
        claims: dict[str, tuple[int, int]],
    ) -> RawMessage:
        job = Job(self._job_id(message_id), connection=self._redis, serializer=JSONSerializer)
        job.restore(job_hash)
        status = _STATUS[job.get_status(refresh=False)]
        claim = claims.get(job.id, (None, None))
        attempt, error = glue[b"attempt"], glue.get(b"last_error")
        return tasks.stored_envelope(job.args[0], message_id, status, attempt, claim, error)

    def describe(self) -> dict[str, Any]:
        self._check_open()
        return {
            **self._link.describe(
                "rq", aof_fallback=True, serializer="rq.serializers.JSONSerializer"
            ),
            "glue": list(self.glue),
        }

    def destroy(self) -> None:
        """Delete the namespace's glue, its RQ queues and registries, its jobs, and its entries
        in RQ's set of queues."""
        self._check_open()
        queue_prefix, started_prefix, failed_prefix = self._layout[3:6]
        patterns = [
            self._key("*"),
            queue_prefix + "*",
            started_prefix + "*",
            failed_prefix + "*",
            f"{Job.redis_job_namespace_prefix}{self.options.namespace}-[0-9]*",
        ]

        def unlink_all() -> None:
            unlink_matching(self._redis, *patterns)
            known = self._redis.smembers(Queue.redis_queues_keys)
            ours = [k for k in known if k.decode().startswith(queue_prefix)]
            if ours:
                self._redis.srem(Queue.redis_queues_keys, *ours)

        self._link.call(unlink_all, repeatable=True)

    def _close(self) -> None:
        self._link.close()


# ---------------------------------------------------------------------- small conversions


def _epoch_ms(moment: datetime | None) -> int | None:
    return None if moment is None else round(moment.timestamp() * 1000)
