"""``redis://`` — the native Redis reference engine, on redis-py (with hiredis when installed).

Every state change is one Lua script (``engines/lua/native_*.lua``), so it is atomic on the
server: claim, ack, fail, extend, reset, clear, and enqueue with its dedupe check. The scripts are
read once with ``importlib.resources``, each prefixed with the helpers in ``native_common.lua``,
and registered with redis-py's ``register_script`` (EVALSHA; after a server restart empties the
script cache, redis-py's ``Script`` loads the text again on ``NOSCRIPT`` — a refused command, so
nothing ran twice).

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
* ``w:<session>`` — a list holding at most one wake token, with a 60 s expiry.

Leases use the server's clock (``TIME`` inside the scripts), so clients on different machines
agree on when a claim expired. A stalled head is claimed again with ``attempt + 1`` by the next
claim after its lease (P7); acks under the old token find another token and raise
``StaleClaimError`` (P8).

Wakeup: enqueue, ack (when more remain), fail, reset and a death push a token onto the session's
wake list; a waiting consumer BLPOPs it on a pooled connection (each blocking call holds its own
connection for the wait, never shared with another thread). A claim that finds nothing deletes
the stale token, so an idle consumer does not spin. A lost token costs at most the iterator's
0.2 s re-poll.

Durability: the engine's durable configuration is a server with ``appendonly yes`` and
``appendfsync always`` — Redis then fsyncs the AOF before it replies, so an enqueue or ack that
returned survives kill -9 of the server (P4, P5). With ``everysec`` up to a second of
acknowledged writes can be lost, and without persistence everything is; ``describe()`` reads the
settings from the live server so results say which guarantee was measured.

Connection errors: redis-py retries nothing by itself here (a script whose reply was lost may have
run). This module retries, with backoff and for at most ``connect_timeout_s``, only what is safe:
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

import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib import metadata, resources
from typing import Any, ClassVar, TypeVar

import redis
import redis.connection
import redis.exceptions
import redis.utils
from redis.backoff import NoBackoff
from redis.retry import Retry

from obsqueue.engines.base import (
    Capability,
    Claim,
    EnqueueResult,
    ObservationQueueEngine,
    PendingMessage,
    PendingMessageWithId,
    RawMessage,
    decode_payload,
)
from obsqueue.errors import (
    EngineUnavailableError,
    InvalidMessageError,
    StaleClaimError,
    redact_url,
)

__all__ = ["RedisEngine"]

T = TypeVar("T")

SCRIPTS = ("enqueue", "claim", "ack", "fail", "extend", "reset", "clear")
_NOT_REACHED = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_REFUSALS = ("OOM", "MISCONF", "READONLY", "NOREPLICAS", "MASTERDOWN", "NOPERM")
_NO_AUTH = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)


@cache
def load_script(name: str) -> str:
    """The text of ``native_<name>.lua``, prefixed with the shared ``native_common.lua``."""
    folder = resources.files("obsqueue.engines").joinpath("lua")
    common = folder.joinpath("native_common.lua").read_text("utf-8")
    return common + "\n" + folder.joinpath(f"native_{name}.lua").read_text("utf-8")


class _NotSentError(redis.exceptions.ConnectionError):
    """Connecting failed, so the command that needed the connection was never sent."""


def _connection_class(url: str) -> type[redis.connection.AbstractConnection]:
    """The connection class redis-py would pick for ``url``, tagging connect failures."""
    scheme = url.partition("://")[0].lower()
    base: type[redis.connection.AbstractConnection] = {
        "unix": redis.connection.UnixDomainSocketConnection,
        "rediss": redis.connection.SSLConnection,
    }.get(scheme, redis.connection.Connection)

    class TaggedConnection(base):  # type: ignore[misc,valid-type]
        def connect(self) -> None:
            try:
                super().connect()
            except _NO_AUTH:
                raise
            except _NOT_REACHED as exc:
                raise _NotSentError(str(exc)) from exc

    return TaggedConnection


class RedisEngine(ObservationQueueEngine):
    """The native engine: Lua scripts over hashes and per-session sorted sets."""

    scheme: ClassVar[str] = "redis"
    # SERVER_CRASH_DURABLE holds in the durable configuration only (appendfsync always);
    # describe()["durability"]["server_crash_durable"] says whether the live server is in it.
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    server_kind: ClassVar[str | None] = "redis"

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = 10.0,
        max_connections: int = 512,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        if not isinstance(socket_timeout_s, int | float) or not socket_timeout_s > 0:
            raise InvalidMessageError(
                "socket_timeout_s",
                f"must be a positive number of seconds, got {socket_timeout_s!r}",
            )
        self._socket_timeout_s = float(socket_timeout_s)
        self._prefix = "{" + self.options.namespace + "}:"
        self._pool = redis.ConnectionPool.from_url(
            url,
            connection_class=_connection_class(url),
            socket_connect_timeout=self.options.connect_timeout_s,
            socket_timeout=self._socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            decode_responses=True,
        )
        self._redis: redis.Redis[str] = redis.Redis(
            connection_pool=self._pool, decode_responses=True
        )
        try:
            self._call(self._ping_by_deadline(), repeatable=True)
        except BaseException:
            self._pool.disconnect()
            raise
        self._scripts = {name: self._redis.register_script(load_script(name)) for name in SCRIPTS}

    # ------------------------------------------------------------------- errors and retries

    def _call(self, op: Callable[[], T], *, repeatable: bool) -> T:
        """Run ``op``; retry while that is safe and ``connect_timeout_s`` lasts; translate."""
        deadline = time.monotonic() + self.options.connect_timeout_s
        delay_s = 0.02
        while True:
            try:
                return op()
            except _NO_AUTH as exc:
                raise self._unavailable(exc, "check the user name and password") from exc
            except _NOT_REACHED as exc:
                safe = repeatable or isinstance(
                    exc, _NotSentError | redis.exceptions.BusyLoadingError
                )
                self._check_open()  # closed meanwhile: say so, not "unavailable"
                if not safe or time.monotonic() + delay_s > deadline:
                    hint = "is the server running?" if safe else "the outcome is unknown"
                    raise self._unavailable(exc, hint) from exc
            except redis.exceptions.ResponseError as exc:
                if not str(exc).startswith(_REFUSALS):
                    raise
                raise self._unavailable(exc, "the server refused the command") from exc
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.5)

    def _ping_by_deadline(self) -> Callable[[], None]:
        """A PING on a fresh connection whose timeouts end with ``connect_timeout_s``, so even
        a server that accepts and never answers is reported within that time."""
        deadline = time.monotonic() + self.options.connect_timeout_s

        def ping() -> None:
            left = max(0.01, deadline - time.monotonic())
            kwargs = {**self._pool.connection_kwargs, "socket_timeout": left}
            conn = self._pool.connection_class(**{**kwargs, "socket_connect_timeout": left})
            try:
                conn.connect()
                conn.send_command("PING")
                conn.read_response()
            finally:
                conn.disconnect()

        return ping

    def _unavailable(self, exc: Exception, hint: str) -> EngineUnavailableError:
        return EngineUnavailableError(
            f"Redis at {redact_url(self.url)} failed: {exc} ({hint}); check the server and retry"
        )

    def _run(self, name: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        """Run a state-changing script once: its reply may be lost after it ran."""
        script = self._scripts[name]
        return self._call(lambda: script(keys=list(keys), args=list(args)), repeatable=False)

    # ---------------------------------------------------------------------------- key names

    def _key(self, kind: str, name: object = "") -> str:
        return f"{self._prefix}{kind}{name}"

    def _session_key(self, session_id: str) -> str:
        return self._key("s:", _utf8("session_id", session_id))

    # --------------------------------------------------------------------------- primitives

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        _utf8("content_session_id", content_session_id)
        _utf8("tool_use_id", message.tool_use_id or "")
        keys = [self._key("ids"), self._session_key(session_id), self._key("dedupe")]
        args = [
            self._prefix,
            session_id,
            content_session_id,
            message.kind,
            message.tool_use_id or "",
            payload_json,
            message.original_timestamp,
        ]
        message_id, duplicate = self._run("enqueue", [*keys, self._key("depth")], args)
        return EnqueueResult(int(message_id), duplicate=bool(duplicate))

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        keys = [self._session_key(session_id), self._key("tokens"), self._key("inflight")]
        args = [
            self._prefix,
            session_id,
            _utf8("consumer_id", consumer_id),
            _ms(lease_s),
            self.options.max_attempts,
        ]
        reply = self._run("claim", keys, args)
        return None if reply is None else _delivered(reply, session_id)

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        token = _token(msg)
        if not self._run("ack", [self._key("m:", msg.id)], [self._prefix, msg.id, token]):
            raise _stale(msg)

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        args = [
            self._prefix,
            msg.id,
            _token(msg),
            reason.encode("utf-8", "replace").decode("utf-8"),
            int(retry),
            self.retry_delay_ms(msg.attempt),
            self.options.max_attempts,
        ]
        if not self._run("fail", [self._key("m:", msg.id)], args):
            raise _stale(msg)

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        script = self._scripts["extend"]
        keys, args = [self._key("m:", msg.id)], [_token(msg), _ms(lease_s)]
        reply = self._call(lambda: script(keys=keys, args=args), repeatable=True)
        if reply is None:
            raise _stale(msg)
        return Claim(int(_token(msg)), int(reply[0]), reply[1] or "")

    def _pending_count(self, session_id: str) -> int:
        key = self._session_key(session_id)
        return int(self._call(lambda: self._redis.zcard(key), repeatable=True))

    def _total_depth(self) -> int:
        depth = self._call(lambda: self._redis.get(self._key("depth")), repeatable=True)
        return max(0, int(depth or 0))

    def _clear_pending(self, session_id: str) -> int:
        return int(self._run("clear", [self._session_key(session_id)], [self._prefix]))

    def _reset_processing(self, session_id: str | None) -> int:
        keys = [self._key("inflight")]
        if session_id is not None:
            keys.append(self._session_key(session_id))
        return int(self._run("reset", keys, [self._prefix, int(session_id is not None)]))

    # ------------------------------------------------------------------------------ wakeup

    def _wakeup_mark(self, session_id: str) -> object:
        return None  # the wake list itself remembers a wake that comes before the wait

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        timeout = round(min(timeout_s, self._socket_timeout_s / 2), 3)
        if timeout < 0.001 or self._closed:
            return  # BLPOP with timeout 0 would block forever
        started = time.monotonic()
        try:
            self._redis.blpop([self._key("w:", session_id)], timeout=timeout)
        except _NOT_REACHED:
            # Only a hint: sleep out the slice; the next claim reports the outage.
            time.sleep(max(0.0, timeout - (time.monotonic() - started)))

    # ------------------------------------------------------------- oracle, describe, destroy

    def inspect_raw(self) -> list[RawMessage]:
        self._check_open()
        start = len(self._key("m:"))

        def read() -> list[RawMessage]:
            ids = sorted({int(k[start:]) for k in self._scan(self._key("m:*"))})
            pipe = self._redis.pipeline(transaction=True)  # one snapshot of every message
            for message_id in ids:
                pipe.hgetall(self._key("m:", message_id))
                pipe.get(self._key("p:", message_id))
            replies = pipe.execute()
            rows = zip(ids, replies[::2], replies[1::2], strict=True)
            return [_raw(message_id, h, p) for message_id, h, p in rows if h]

        return self._call(read, repeatable=True)

    def _scan(self, pattern: str) -> list[str]:
        return list(self._redis.scan_iter(match=pattern, count=1000))

    def describe(self) -> dict[str, Any]:
        self._check_open()
        info = self._call(lambda: self._redis.info("server"), repeatable=True)
        return {
            "library": {"redis": _version("redis"), "hiredis": _version("hiredis")},
            "client": {
                "parser": "hiredis" if redis.utils.HIREDIS_AVAILABLE else "python",
                "socket_timeout_s": self._socket_timeout_s,
                "connect_timeout_s": self.options.connect_timeout_s,
            },
            "server": {
                "kind": "redis",
                "version": info.get("redis_version"),
                "mode": info.get("redis_mode"),
            },
            "durability": self._durability(),
        }

    def _durability(self) -> dict[str, Any]:
        def config_get() -> dict[str, str] | str:
            try:
                return dict(self._redis.config_get("appendonly", "appendfsync", "save"))
            except redis.exceptions.ResponseError as exc:  # renamed, disabled or not permitted
                return str(exc)

        cfg = self._call(config_get, repeatable=True)
        if isinstance(cfg, str):
            persistence = self._call(lambda: self._redis.info("persistence"), repeatable=True)
            return {
                "config": f"unavailable: CONFIG GET was refused ({cfg})",
                "aof_enabled": bool(persistence.get("aof_enabled")),
                "server_crash_durable": None,
            }
        durable = cfg.get("appendonly") == "yes" and cfg.get("appendfsync") == "always"
        return {
            "appendonly": cfg.get("appendonly"),
            "appendfsync": cfg.get("appendfsync"),
            "save": cfg.get("save"),
            "server_crash_durable": durable,
        }

    def destroy(self) -> None:
        self._check_open()

        def unlink_all() -> None:
            keys = self._scan(self._key("*"))
            for i in range(0, len(keys), 500):
                self._redis.unlink(*keys[i : i + 500])

        self._call(unlink_all, repeatable=True)

    def _close(self) -> None:
        self._redis.close()
        self._pool.disconnect()


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


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _token(msg: PendingMessageWithId) -> str:
    assert msg.claim is not None  # checked by the base class
    return str(msg.claim.token)


def _stale(msg: PendingMessageWithId) -> StaleClaimError:
    token = msg.claim.token if msg.claim is not None else None
    return StaleClaimError(
        f"message {msg.id} is no longer held by claim {token}: its lease expired and it was "
        "delivered again, or it was reset; do not acknowledge it"
    )


def _delivered(reply: list[Any], session_id: str) -> PendingMessageWithId:
    message_id, attempt, token, lease, kind, tool_use_id, payload, ts, csid, enq, who = reply
    return PendingMessageWithId(
        kind=kind,
        tool_use_id=tool_use_id,
        payload=decode_payload(payload),
        original_timestamp=int(ts),
        id=int(message_id),
        session_id=session_id,
        content_session_id=csid,
        attempt=int(attempt),
        claim=Claim(int(token), int(lease), who),
        enqueued_at_ms=int(enq),
    )


def _raw(message_id: int, h: dict[str, str], payload: str) -> RawMessage:
    token = h.get("token")
    return RawMessage(
        id=message_id,
        session_id=h["session"],
        content_session_id=h["content_session"],
        kind=h["kind"],
        tool_use_id=h.get("tool_use_id"),
        payload=decode_payload(payload),
        original_timestamp=int(h["original_timestamp"]),
        status=h["status"],  # type: ignore[arg-type]
        attempt=int(h["attempt"]),
        claim_token=None if token is None else int(token),
        lease_expires_at_ms=None if token is None else int(h["lease_expires_at"]),
        last_error=h.get("last_error"),
    )


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
