"""The Redis connection layer the Redis-backed engines share, on redis-py (hiredis when installed).

``redis://``, ``rq+redis://``, ``dramatiq+redis://`` and ``huey+redis://`` hold one
:class:`RedisLink` each; what the libraries give and what obsqueue adds stays in each engine's
module. The link holds, once:

* **A pool with tagged connections.** redis-py's ``ConnectionPool`` from the URL, with the
  connection class redis-py would pick for it (TCP, ``rediss://``, ``unix://``) subclassed so
  that a failure to *connect* raises :class:`NotSentError`: the command that needed the
  connection was never sent. redis-py retries nothing by itself (``Retry(NoBackoff(), 0)``): a
  script whose reply was lost may have run. Pooled connections broken by a server restart are
  replaced when next checked out.
* **The call loop.** :meth:`RedisLink.call` runs an operation under the shared retry policy
  (``engines/retry.py``): retried with backoff, for at most ``connect_timeout_s``, only while
  that is safe — a ``repeatable`` one (a read, a lease extension), or a single command that
  failed before it was sent (connecting, or the server still loading its data). It translates
  errors once: connection failures, bad credentials and the refusals in ``REFUSALS`` (OOM,
  MISCONF, READONLY, ...) become ``EngineUnavailableError`` naming the URL with its password
  redacted, and saying "the outcome is unknown" when a command may have run.
* **A ping by deadline**, so even a server that accepts and never answers is reported within
  ``connect_timeout_s``; the server's version and durability settings for ``describe()``, read
  from the live server; the wake-list wait; the Lua script loader
  (``engines/redis/lua/<prefix>_*.lua``, each prefixed with the shared ``lib.lua`` and then
  ``<prefix>_common.lua``); small conversions of Redis arguments and replies.

Dramatiq's adapter unwraps Dramatiq's ``ConnectionClosed`` before the loop sees it; Huey's
bundles several commands in one call, so it passes ``single=False``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib import metadata, resources
from typing import Any, Final, TypeVar

import redis
import redis.connection
import redis.exceptions
import redis.utils
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from obsqueue.engines.base import ObservationQueueEngine
from obsqueue.engines.options import positive_int, positive_seconds
from obsqueue.engines.retry import Deadline, outcome_hint
from obsqueue.engines.types import PendingMessageWithId
from obsqueue.errors import EngineUnavailableError, redact_url

__all__ = [
    "NOT_REACHED",
    "REFUSALS",
    "NotSentError",
    "RedisLink",
    "claim_token",
    "library_versions",
    "load_script",
    "scan_keys",
    "storable",
    "text",
    "unlink_matching",
]

T = TypeVar("T")

#: Errors of a command that did not complete: the connection failed, or its reply did not come.
NOT_REACHED = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_NO_AUTH = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
#: The refusal list: replies that say the server will not run commands now. Never retried.
REFUSALS: Final = ("OOM", "MISCONF", "READONLY", "NOREPLICAS", "MASTERDOWN", "NOPERM")


class NotSentError(redis.exceptions.ConnectionError):
    """Connecting failed, so the command that needed the connection was never sent."""


#: Failures after which the command did not run: not sent, or refused while Redis loads data.
_NOTHING_RAN = (NotSentError, redis.exceptions.BusyLoadingError)


def _tagged(base: type[redis.connection.AbstractConnection]) -> type[Any]:
    class TaggedConnection(base):  # type: ignore[misc,valid-type]
        def connect(self) -> None:
            try:
                super().connect()
            except _NO_AUTH:
                raise
            except NOT_REACHED as exc:
                raise NotSentError(str(exc)) from exc

    return TaggedConnection


#: The connection class redis-py would pick for a URL scheme, tagging connect failures.
_TAGGED = {
    "unix": _tagged(redis.connection.UnixDomainSocketConnection),
    "rediss": _tagged(redis.connection.SSLConnection),
    "redis": _tagged(redis.connection.Connection),
}


class RedisLink:
    """One engine's pool and client, and the rules its commands run by (module docstring).

    ``url`` is the plain Redis URL to connect to; ``shown_url`` the engine's own URL, named
    (password redacted) in errors; ``check_open`` raises ``EngineClosedError`` once the engine
    is closed, so a call that fails because of the close says so rather than "unavailable".
    """

    def __init__(
        self,
        url: str,
        *,
        shown_url: str,
        connect_timeout_s: float,
        socket_timeout_s: float,
        max_connections: int,
        check_open: Callable[[], None],
        decode_responses: bool = False,
    ) -> None:
        self.shown_url = shown_url
        self.connect_timeout_s = connect_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self.check_open = check_open
        self.pool = redis.ConnectionPool.from_url(
            url,
            connection_class=_TAGGED.get(url.partition("://")[0].lower(), _TAGGED["redis"]),
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            decode_responses=decode_responses,
        )
        self.client: redis.Redis[Any] = redis.Redis(connection_pool=self.pool)

    @classmethod
    def for_engine(
        cls,
        engine: ObservationQueueEngine,
        url: str,
        *,
        socket_timeout_s: object,
        max_connections: object,
        decode_responses: bool = False,
    ) -> RedisLink:
        """The link of ``engine`` to the plain Redis URL ``url``, its options checked; errors
        name the engine's own URL."""
        return cls(
            url,
            shown_url=engine.url,
            connect_timeout_s=engine.options.connect_timeout_s,
            socket_timeout_s=positive_seconds("socket_timeout_s", socket_timeout_s),
            max_connections=positive_int("max_connections", max_connections),
            check_open=engine._check_open,
            decode_responses=decode_responses,
        )

    # ------------------------------------------------------------------- errors and retries

    def call(self, op: Callable[[], T], *, repeatable: bool, single: bool = True) -> T:
        """Run ``op`` under the retry policy (``engines/retry.py``) and translate its errors.

        ``single``: ``op`` sends one command (a script, one MULTI/EXEC), so a failure to connect
        means nothing ran; an ``op`` that bundles several commands passes False, and is then
        retried only when ``repeatable``."""
        deadline = Deadline(self.connect_timeout_s, check_open=self.check_open)
        while True:
            try:
                return op()
            except _NO_AUTH as exc:
                raise self.unavailable(exc, "check the user name and password") from exc
            except NOT_REACHED as exc:
                safe = repeatable or (single and isinstance(exc, _NOTHING_RAN))
                if not deadline.again(safe=safe):
                    raise self.unavailable(exc, outcome_hint(safe)) from exc
            except redis.exceptions.ResponseError as exc:
                if not str(exc).startswith(REFUSALS):
                    raise
                raise self.unavailable(exc, "the server refused the command") from exc

    def unavailable(self, exc: Exception, hint: str) -> EngineUnavailableError:
        return EngineUnavailableError(
            f"Redis at {redact_url(self.shown_url)} failed: {exc} ({hint}); "
            "check the server and retry"
        )

    def check_reachable(self, ping: Callable[[], None] | None = None) -> None:
        """Run ``ping`` (by default :meth:`ping_by_deadline`) as a repeatable call; if it fails,
        release the pool before the error goes up."""
        try:
            self.call(ping or self.ping_by_deadline(), repeatable=True)
        except BaseException:
            self.pool.disconnect()
            raise

    def ping_by_deadline(self) -> Callable[[], None]:
        """A PING on a fresh connection whose timeouts end with ``connect_timeout_s``, so even
        a server that accepts and never answers is reported within that time."""
        deadline = time.monotonic() + self.connect_timeout_s

        def ping() -> None:
            left = max(0.01, deadline - time.monotonic())
            kwargs = {**self.pool.connection_kwargs, "socket_timeout": left}
            conn = self.pool.connection_class(**{**kwargs, "socket_connect_timeout": left})
            try:
                conn.connect()
                conn.send_command("PING")
                conn.read_response()
            finally:
                conn.disconnect()

        return ping

    # ------------------------------------------------------------------- scripts and waits

    def scripts(self, prefix: str, names: Sequence[str]) -> dict[str, Script]:
        """The scripts ``<prefix>_<name>.lua``, registered (EVALSHA; after a server restart
        empties the script cache, redis-py's ``Script`` loads the text again on ``NOSCRIPT`` —
        a refused command, so nothing ran twice)."""
        return {name: self.client.register_script(load_script(prefix, name)) for name in names}

    def wait_for_wake(self, keys: str | Sequence[str], timeout_s: float) -> None:
        """BLPOP the wake list ``keys`` (or the first of several to get a token) for at most
        ``timeout_s``, capped at half the socket timeout so the reply comes before the socket
        gives up. An outage is only a missed hint: the slice is slept out and the next claim
        reports it."""
        timeout = round(min(timeout_s, self.socket_timeout_s / 2), 3)
        if timeout < 0.001:
            return  # BLPOP with timeout 0 would block forever
        started = time.monotonic()
        try:
            self.client.blpop([keys] if isinstance(keys, str) else list(keys), timeout=timeout)
        except NOT_REACHED:
            time.sleep(max(0.0, timeout - (time.monotonic() - started)))

    # ------------------------------------------------------------------ describe and close

    def describe(self, *libraries: str, aof_fallback: bool, **client: object) -> dict[str, Any]:
        """describe()'s Redis part: the versions of ``libraries`` and of the Redis client, the
        client's settings (``client`` after the parser), the server and its durability."""
        server = self.server()
        return {
            "library": library_versions(*libraries),
            "client": {
                "parser": "hiredis" if redis.utils.HIREDIS_AVAILABLE else "python",
                **client,
                "socket_timeout_s": self.socket_timeout_s,
                "connect_timeout_s": self.connect_timeout_s,
            },
            "server": server,
            "durability": self.durability(aof_fallback=aof_fallback),
        }

    def server(self, *, mode: bool = True) -> dict[str, Any]:
        """The server's kind and version, and with ``mode`` its ``redis_mode``, from INFO."""
        info = self.call(lambda: self.client.info("server"), repeatable=True)
        found = {"kind": "redis", "version": info.get("redis_version")}
        return {**found, "mode": info.get("redis_mode")} if mode else found

    def durability(self, *, aof_fallback: bool) -> dict[str, Any]:
        """``appendonly``, ``appendfsync`` and ``save`` as the live server has them, and
        whether that is the durable configuration (``appendonly yes``, ``appendfsync
        always``). When CONFIG GET is refused the answer is unknown (None); ``aof_fallback``
        then adds INFO persistence's ``aof_enabled``."""

        def config_get() -> dict[str, str] | str:
            try:
                raw = self.client.config_get("appendonly", "appendfsync", "save")
            except redis.exceptions.ResponseError as exc:  # renamed, disabled or not permitted
                return str(exc)
            return {text(k): text(v) for k, v in raw.items()}

        cfg = self.call(config_get, repeatable=True)
        if isinstance(cfg, str):
            refused: dict[str, Any] = {"config": f"unavailable: CONFIG GET was refused ({cfg})"}
            if aof_fallback:
                persistence = self.call(lambda: self.client.info("persistence"), repeatable=True)
                refused["aof_enabled"] = bool(persistence.get("aof_enabled"))
            return {**refused, "server_crash_durable": None}
        durable = cfg.get("appendonly") == "yes" and cfg.get("appendfsync") == "always"
        return {
            "appendonly": cfg.get("appendonly"),
            "appendfsync": cfg.get("appendfsync"),
            "save": cfg.get("save"),
            "server_crash_durable": durable,
        }

    def close(self) -> None:
        self.client.close()
        self.pool.disconnect()


# ---------------------------------------------------------------------------- functions


@cache
def load_script(prefix: str, name: str) -> str:
    """The text of ``<prefix>_<name>.lua``, prefixed with the helpers every family shares
    (``lib.lua``) and then its own (``<prefix>_common.lua``): Lua scripts cannot include."""
    folder = resources.files("obsqueue.engines.redis").joinpath("lua")
    parts = ["lib.lua", f"{prefix}_common.lua", f"{prefix}_{name}.lua"]
    return "\n".join(folder.joinpath(part).read_text("utf-8") for part in parts)


def scan_keys(client: redis.Redis[Any], pattern: str) -> list[Any]:
    return list(client.scan_iter(match=pattern, count=1000))


def unlink_matching(client: redis.Redis[Any], *patterns: str) -> None:
    """UNLINK every key matching one of ``patterns`` (SCAN first, then batches of 500)."""
    keys = [key for pattern in patterns for key in scan_keys(client, pattern)]
    for i in range(0, len(keys), 500):
        client.unlink(*keys[i : i + 500])


def library_versions(*libraries: str) -> dict[str, str | None]:
    """The installed versions of ``libraries``, then of redis-py and hiredis (None: absent)."""
    return {name: _version(name) for name in (*libraries, "redis", "hiredis")}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def text(value: bytes | str) -> str:
    """A Redis reply as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value


def storable(value: str) -> str:
    """Free text (a reason, a consumer id) as Redis can store it: lone surrogates replaced."""
    return value.encode("utf-8", "replace").decode("utf-8")


def claim_token(msg: PendingMessageWithId) -> str:
    """The fencing token of the claim ``msg`` was delivered under, as a script argument."""
    assert msg.claim is not None  # checked by the base class
    return str(msg.claim.token)
