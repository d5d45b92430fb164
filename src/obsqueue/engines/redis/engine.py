"""``redis://`` — the native Redis reference engine, on redis-py (with hiredis when installed).

Every state change is one Lua script (``engines/redis/lua/native_*.lua``), so it is atomic on the
server: claim, ack, fail, extend, reset, clear, and enqueue with its dedupe check. The scripts are
read once with ``importlib.resources``, each prefixed with the helpers in ``native_common.lua``,
and registered with redis-py's ``register_script`` (EVALSHA; after a server restart empties the
script cache, redis-py's ``Script`` loads the text again on ``NOSCRIPT`` — a refused command, so
nothing ran twice). An ack of a message an iterator delivered deletes it and claims the
session's next head in one script (``native_ack_claim.lua``), which the iterator then yields
without another round trip (``engines/handoff.py``); ``enqueue_many`` sends its enqueue scripts
in one pipeline.

Keys, all under ``{namespace}:`` (hash-tagged, so a cluster would keep a namespace in one slot;
scripts build per-message and per-session key names from the prefix, which a cluster tolerates
only because they share that slot):

* ``ids``, ``tokens`` — INCR counters for message ids and fencing tokens, never reused.
* ``m:<id>`` — a hash per message: session, content_session, kind, tool_use_id,
  original_timestamp, enqueued_at, status, attempt, available_at, token, lease_expires_at,
  consumer, last_error; ``p:<id>`` — its payload (JSON text) as a string, kept apart so the hash
  stays a compact listpack (a 200-byte payload would turn it into a hashtable, ~2x the memory).
  Dead messages keep both; acked and cleared ones are deleted.
* ``s:<session>`` — a sorted set of the session's not-dead ids (score = id): the head is the
  lowest, and only the head is ever claimed, so one message per session is in flight (P1, P2).
* ``inflight`` — the ids in flight (for ``reset_processing_to_pending()`` over all sessions).
* ``dedupe`` — a hash from (content_session_id, tool_use_id) to id, held while the message is
  pending or in flight (P3).
* ``depth`` — the number of messages pending or in flight, kept by the scripts (O(1) depth).
* ``sessions`` — a sorted set of the sessions with a message pending or in flight, scored by
  the session's head id (kept by enqueue, ack, death and clear): the many-session iterator's
  every-session mode walks it oldest head first.
* ``w:<session>`` — a list holding at most one wake token, with a 60 s expiry; ``wake`` — the
  same for consumers of every session, holding up to 64 tokens.

Leases use the server's clock (``TIME`` inside the scripts), so clients on different machines
agree on when a claim expired. A stalled head is claimed again with ``attempt + 1`` by the next
claim after its lease (P7); acks under the old token find another token and raise
``StaleClaimError`` (P8).

Wakeup: enqueue, ack (when more remain), fail, reset and a death push a token onto the session's
wake list; a waiting consumer BLPOPs it on a pooled connection (each blocking call holds its own
connection for the wait, never shared with another thread). A claim that finds nothing deletes
the stale token, so an idle consumer does not spin. A lost token costs at most the iterator's
0.2 s re-poll.

The many-session iterator claims the heads of up to ``CLAIM_BATCH`` sessions in one script
(``native_claim_heads.lua``, each head decided by the same ``claim_head`` as a single claim) and
gives back unyielded ones in one (``native_unclaim.lua``). Its wait BLPOPs every wake list of
its set at once; over every session it BLPOPs ``wake``, which every wake also feeds. A BLPOP
takes one token, so one wake wakes one waiter: enough per session (one head, one claimer), and
for the every-session list the cap of 64 lets a burst over many sessions wake that many
consumers; a round over every session that claims all it can deletes the rest. Each waiter takes
its own token, so consumers on overlapping sets are all woken by a burst; broadcasting (pub/sub)
would wake every consumer for every enqueue, and need a connection held per iterator.

Durability: the engine's durable configuration is a server with ``appendonly yes`` and
``appendfsync always`` — Redis then fsyncs the AOF before it replies, so an enqueue or ack that
returned survives kill -9 of the server (P4, P5). With ``everysec`` up to a second of
acknowledged writes can be lost, and without persistence everything is; ``describe()`` reads the
settings from the live server so results say which guarantee was measured.

Connection errors: redis-py retries nothing by itself here (a script whose reply was lost may have
run). The engine retries (through ``redis/link.py``, the connection layer the Redis-backed engines
share), with backoff and for at most ``connect_timeout_s``, only what is safe:
reads, lease extension, and any command that failed before it was sent (connecting, or the server
still loading its data). Otherwise it raises ``EngineUnavailableError`` saying the outcome is
unknown. Pooled connections broken by a server restart are replaced when next checked out, so the
engine works again on its own once the server is back.

Needs Redis >= 6.0 (fractional BLPOP timeouts; scripts replicated by effects). Claims are not
renewed automatically: a consumer that may outlive its lease calls ``extend_lease(msg)``. Engine
options: ``socket_timeout_s`` (a reply slower than this is an error) and ``max_connections``
(the pool's size; each blocked consumer holds one connection). Ids with lone surrogates are
refused (``InvalidMessageError``): Redis-py sends UTF-8 only.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import redis

from obsqueue.engines.base import Claimer, PendingMessageWithId
from obsqueue.engines.handoff import Handoff
from obsqueue.engines.options import to_ms
from obsqueue.engines.records import delivered, stored
from obsqueue.engines.redis.family import RedisBacked
from obsqueue.engines.redis.link import claim_token, scan_keys, storable, unlink_matching
from obsqueue.engines.types import Capability, Claim, EnqueueResult, PendingMessage, RawMessage
from obsqueue.errors import InvalidMessageError, stale_claim

__all__ = ["RedisEngine"]

#: The many-session wakeup mark: nothing to remember (a wake before the wait stays in its list);
#: not None, which the iterator reads as "nothing was claimed yet".
_LISTS = object()

SCRIPTS = (
    "enqueue",
    "claim",
    "claim_heads",
    "ack",
    "ack_claim",
    "unclaim",
    "fail",
    "extend",
    "reset",
    "clear",
)


class RedisEngine(RedisBacked):
    """The native engine: Lua scripts over hashes and per-session sorted sets."""

    scheme: ClassVar[str] = "redis"
    # SERVER_CRASH_DURABLE holds in the durable configuration only (appendfsync always);
    # describe()["durability"]["server_crash_durable"] says whether the live server is in it.
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    DECODE_RESPONSES: ClassVar[bool] = True
    #: Heads one many-session claim round takes (one script for all of them).
    CLAIM_BATCH: ClassVar[int] = 8

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._prefix = "{" + self.options.namespace + "}:"
        self._redis: redis.Redis[str] = self._link.client
        self._scripts = self._link.scripts("native", SCRIPTS)
        self._handoff = Handoff(
            ack_and_claim=self._ack_and_claim, unclaim=self._unclaim, wake=lambda _session: None
        )

    # ------------------------------------------------------------------------------ scripts

    def _run(self, name: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        """Run a state-changing script once: its reply may be lost after it ran."""
        script = self._scripts[name]
        return self._link.call(lambda: script(keys=list(keys), args=list(args)), repeatable=False)

    # ---------------------------------------------------------------------------- key names

    def _key(self, kind: str, name: object = "") -> str:
        return f"{self._prefix}{kind}{name}"

    def _session_key(self, session_id: str) -> str:
        return self._key("s:", _utf8("session_id", session_id))

    # --------------------------------------------------------------------------- primitives

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        keys, args = self._enqueue_call(session_id, content_session_id, message, payload_json)
        return _enqueued(self._run("enqueue", keys, args))

    def _enqueue_batch(
        self, items: list[tuple[str, str, PendingMessage, str]]
    ) -> list[EnqueueResult]:
        """One enqueue script per item, all in one pipeline: one round trip (and, with
        ``appendfsync always``, one fsync for the commands the server read together)."""
        calls = [self._enqueue_call(*item) for item in items]
        script = self._scripts["enqueue"]

        def send() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for keys, args in calls:
                script(keys=keys, args=args, client=pipe)
            return pipe.execute()

        return [_enqueued(reply) for reply in self._link.call(send, repeatable=False)]

    def _enqueue_call(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> tuple[list[str], list[object]]:
        _utf8("content_session_id", content_session_id)
        _utf8("tool_use_id", message.tool_use_id or "")
        keys = [self._key("ids"), self._session_key(session_id), self._key("dedupe")]
        args: list[object] = [
            self._prefix,
            session_id,
            content_session_id,
            message.kind,
            message.tool_use_id or "",
            payload_json,
            message.original_timestamp,
        ]
        return [*keys, self._key("depth"), self._key("sessions")], args

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        keys = [self._session_key(session_id), self._key("tokens"), self._key("inflight")]
        args = [
            self._prefix,
            session_id,
            _utf8("consumer_id", consumer_id),
            to_ms(lease_s),
            self.options.max_attempts,
        ]
        reply = self._run("claim", keys, args)
        return None if reply is None else _delivered(reply, session_id)

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        self._handoff.ack(msg, self._ack_alone)

    def _ack_alone(self, msg: PendingMessageWithId) -> None:
        token = claim_token(msg)
        if not self._run("ack", [self._key("m:", msg.id)], [self._prefix, msg.id, token]):
            raise stale_claim(msg)

    def _ack_and_claim(
        self, msg: PendingMessageWithId, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        """Ack ``msg`` and claim its session's next head in one script (one round trip); the
        script wakes the session, as an ack does (the head's iterator may be blocked)."""
        sid = msg.session_id
        keys = [
            self._key("m:", msg.id),
            self._session_key(sid),
            self._key("tokens"),
            self._key("inflight"),
        ]
        args = [
            self._prefix,
            msg.id,
            claim_token(msg),
            sid,
            _utf8("consumer_id", consumer_id),
            to_ms(lease_s),
            self.options.max_attempts,
        ]
        reply = self._run("ack_claim", keys, args)
        if not int(reply[0]):
            raise stale_claim(msg)
        return _delivered(reply[1:], sid) if len(reply) > 1 else None

    def _unclaim(self, msg: PendingMessageWithId) -> None:
        """Give back a head claimed with an ack but never handed out."""
        self._unclaim_heads([msg])

    def _claimer(
        self, sid: str, consumer_id: str, lease_s: float, stop: threading.Event | None
    ) -> contextlib.AbstractContextManager[Claimer]:
        """Claims handed over by ``_ack_and_claim`` first (``engines/handoff.py``)."""
        return self._handoff.claimer(
            sid, consumer_id, lease_s, stop, lambda: self._claim_next(sid, consumer_id, lease_s)
        )

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        self._handoff.forget(msg)
        args = [
            self._prefix,
            msg.id,
            claim_token(msg),
            storable(reason),
            int(retry),
            self.retry_delay_ms(msg.attempt),
            self.options.max_attempts,
        ]
        if not self._run("fail", [self._key("m:", msg.id)], args):
            raise stale_claim(msg)

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        script = self._scripts["extend"]
        keys, args = [self._key("m:", msg.id)], [claim_token(msg), to_ms(lease_s)]
        reply = self._link.call(lambda: script(keys=keys, args=args), repeatable=True)
        if reply is None:
            raise stale_claim(msg)
        return Claim(int(claim_token(msg)), int(reply[0]), reply[1] or "")

    def _pending_count(self, session_id: str) -> int:
        key = self._session_key(session_id)
        return int(self._link.call(lambda: self._redis.zcard(key), repeatable=True))

    def _total_depth(self) -> int:
        depth = self._link.call(lambda: self._redis.get(self._key("depth")), repeatable=True)
        return max(0, int(depth or 0))

    def _clear_pending(self, session_id: str) -> int:
        return int(self._run("clear", [self._session_key(session_id)], [self._prefix, session_id]))

    def _reset_processing(self, session_id: str | None) -> int:
        keys = [self._key("inflight")]
        if session_id is not None:
            keys.append(self._session_key(session_id))
        return int(self._run("reset", keys, [self._prefix, int(session_id is not None)]))

    # ------------------------------------------------------------------------------ wakeup

    def _wakeup_mark(self, session_id: str) -> object:
        return None  # the wake list itself remembers a wake that comes before the wait

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        if not self._closed:
            self._link.wait_for_wake([self._key("w:", session_id)], timeout_s)

    # ------------------------------------------------------------ the many-session iterator

    def _claim_heads(
        self, sids: tuple[str, ...] | None, consumer_id: str, lease_s: float, limit: int
    ) -> list[PendingMessageWithId]:
        """One script claims the heads of up to ``limit`` sessions: of ``sids`` in the order
        given, or of every session with work, oldest head first (``native_claim_heads.lua``)."""
        sessions = () if sids is None else sids
        keys = [self._key("tokens"), self._key("inflight"), self._key("sessions")]
        keys += [self._key("wake"), *(self._session_key(s) for s in sessions)]
        args: list[object] = [self._prefix, _utf8("consumer_id", consumer_id), to_ms(lease_s)]
        args += [self.options.max_attempts, limit, *sessions]
        return [_delivered(r[:-1], r[-1]) for r in self._run("claim_heads", keys, args)]

    def _unclaim_heads(self, msgs: list[PendingMessageWithId]) -> None:
        """Give back heads claimed and never handed out, in one script; best effort (else each
        comes back when its lease runs out, as a stalled claim)."""
        if not msgs:
            return
        keys = [self._key("m:", m.id) for m in msgs]
        args: list[object] = [self._prefix]
        for m in msgs:
            args += [m.id, claim_token(m)]
        with contextlib.suppress(Exception):
            self._scripts["unclaim"](keys=keys, args=args)

    def _sessions_with_work(self) -> list[str]:
        """The sessions zset the scripts keep: every session with a message pending or in
        flight, oldest head first."""
        key = self._key("sessions")
        return list(self._link.call(lambda: self._redis.zrange(key, 0, -1), repeatable=True))

    def _wakeup_mark_many(self, sids: tuple[str, ...] | None) -> object:
        return _LISTS  # the wake lists themselves remember a wake that comes before the wait

    def _wait_for_any(self, sids: tuple[str, ...] | None, timeout_s: float, mark: object) -> None:
        """BLPOP the wake lists of ``sids`` (one token: one session's head may be claimable), or
        the every-session list, which keeps up to ``WAKE_ANY_CAP`` tokens so that a burst wakes
        that many consumers (``native_common.lua``)."""
        if self._closed:
            return
        keys = [self._key("wake")] if sids is None else [self._key("w:", s) for s in sids]
        self._link.wait_for_wake(keys, timeout_s)

    # ------------------------------------------------------------- oracle, describe, destroy

    def inspect_raw(self) -> list[RawMessage]:
        self._check_open()
        start = len(self._key("m:"))

        def read() -> list[RawMessage]:
            ids = sorted({int(k[start:]) for k in scan_keys(self._redis, self._key("m:*"))})
            pipe = self._redis.pipeline(transaction=True)  # one snapshot of every message
            for message_id in ids:
                pipe.hgetall(self._key("m:", message_id))
                pipe.get(self._key("p:", message_id))
            replies = pipe.execute()
            rows = zip(ids, replies[::2], replies[1::2], strict=True)
            return [_raw(message_id, h, p) for message_id, h, p in rows if h]

        return self._link.call(read, repeatable=True)

    def describe(self) -> dict[str, Any]:
        self._check_open()
        return self._link.describe(aof_fallback=True)

    def destroy(self) -> None:
        self._check_open()
        self._link.call(lambda: unlink_matching(self._redis, self._key("*")), repeatable=True)

    def _close(self) -> None:
        self._handoff.close()
        self._link.close()


# ---------------------------------------------------------------------- replies to objects


def _utf8(field: str, value: str) -> str:
    """Redis stores UTF-8: a lone surrogate cannot be stored, so it is refused like bad input."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessageError(
            field, "contains a lone surrogate, which Redis cannot store"
        ) from None
    return value


def _enqueued(reply: list[Any]) -> EnqueueResult:
    message_id, duplicate = reply
    return EnqueueResult(int(message_id), duplicate=bool(duplicate))


def _delivered(reply: list[Any], session_id: str) -> PendingMessageWithId:
    mid, attempt, token, lease, kind, tool_use_id, payload, ts, csid, enq, who = reply
    claim = (token, lease, who)
    return delivered(mid, session_id, csid, kind, tool_use_id, payload, ts, attempt, claim, enq)


def _raw(message_id: int, h: dict[str, str], payload: str) -> RawMessage:
    token = h.get("token")
    claim = (token, None if token is None else h["lease_expires_at"])
    fields = h["session"], h["content_session"], h["kind"], h.get("tool_use_id")
    ts, status, attempt = h["original_timestamp"], h["status"], h["attempt"]
    return stored(message_id, *fields, payload, ts, status, attempt, claim, h.get("last_error"))
