"""The connection boundary of ``postgresql://``: the pool, and where driver errors are translated.

``Connections`` owns the engine's ``psycopg_pool.ConnectionPool`` (autocommit connections of the
``Conn`` class, which keeps one cursor for the engine's statements) and runs every statement
through ``Connections.call``, the one place psycopg errors become ``EngineUnavailableError``
naming the URL with its password redacted. The rules (the engine's module docstring states them
too):

* A connection taken from the pool is checked first without a round trip: a connection the
  server closed while it was idle has input waiting (an error or EOF), which a zero-timeout poll
  sees; only then is it probed with an empty query, and replaced if that fails. The pool gives up
  a failed connection attempt at once (``reconnect_timeout=0``) and each try waits at most
  0.25 s for a connection, so after a server restart or ``pg_terminate_backend`` the next call
  gets a fresh one.
* A missing schema (dropped by ``destroy()``) is created again through the engine's ``migrate``
  and the statement retried once: it failed before it did anything.
* Connection failures follow the shared retry policy (``engines/retry.py``): retried, with
  backoff from 20 ms up to 0.5 s, until ``connect_timeout_s`` when the call is ``repeatable``
  (reads, lease extensions) or when the server answered with an error (an SQLSTATE: the
  autocommitted statement rolled back). A write whose reply was lost raises at once: its outcome
  is unknown.
* Any other error the server sent back raises (the server refused the statement); an error
  raised by the client library itself is a bug and propagates unchanged.
"""

from __future__ import annotations

import logging
import math
import select
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from obsqueue.engines.options import positive_int
from obsqueue.engines.retry import Deadline, outcome_hint
from obsqueue.errors import EngineUnavailableError, InvalidMessageError, redact_url

__all__ = ["Conn", "Connections", "check_pool_sizes"]

T = TypeVar("T")

_SCHEMA_MISSING = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)

# psycopg_pool logs its workers' connection failures (and "couldn't stop thread" when the pool
# is closed while one is still connecting) as warnings. Those failures reach the user once, as
# the EngineUnavailableError below; an application that configures logging still sees them,
# but without logging set up Python's last-resort handler would print each one to stderr.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())


class _Unavailable(Exception):
    """No pooled connection could be had before the deadline (nothing was sent)."""


class Conn(psycopg.Connection[Any]):
    """A pooled connection that keeps one cursor for the engine's statements (a new cursor per
    statement costs ~10% of a hot-path round trip), and records why connecting failed last.
    Each engine uses a subclass with its own ``connect_errors`` list."""

    connect_errors: ClassVar[list[str]] = []
    _statement_cursor: psycopg.Cursor[Any] | None = None

    @classmethod
    def for_engine(cls) -> type[Conn]:
        return type("EngineConnection", (cls,), {"connect_errors": []})

    @classmethod
    def connect(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().connect(*args, **kwargs)
        except psycopg.Error as exc:
            text = str(exc).strip()
            cls.connect_errors[:] = [text.splitlines()[0] if text else repr(exc)]
            raise

    def run(self, query: bytes, params: dict[str, Any] | None = None) -> psycopg.Cursor[Any]:
        cur = self._statement_cursor
        if cur is None or cur.closed:
            cur = self._statement_cursor = self.cursor()
        return cur.execute(query, params)


class Connections:
    """One engine's pooled connections; ``call`` runs a statement under the rules above.

    ``check_open`` raises ``EngineClosedError`` once the engine is closed; ``migrate`` creates or
    migrates the schema on a connection (it is run by ``open`` and to heal a missing schema)."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        connect_timeout_s: float,
        pool_sizes: tuple[int, int],
        check_open: Callable[[], None],
        migrate: Callable[[Conn], None],
    ) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.pool_sizes = pool_sizes
        self._check_open = check_open
        self._migrate = migrate
        self.connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(connect_timeout_s)),
            "application_name": f"obsqueue {namespace}",
        }
        self._connection_class = Conn.for_engine()
        self.pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            connection_class=self._connection_class,
            kwargs=self.connect_kwargs,
            min_size=pool_sizes[0],
            max_size=pool_sizes[1],
            open=False,
            timeout=connect_timeout_s,
            reconnect_timeout=0.0,  # give up a failed attempt at once; the next getconn retries
            name=f"obsqueue-{namespace}",
        )

    def open(self) -> None:
        """Open the pool (without waiting for it to fill) and create or migrate the schema; on
        failure the pool is closed again."""
        try:
            self.pool.open(wait=False)
            self.call(self._migrate, repeatable=True, heal=False)
        except BaseException:
            self.pool.close(timeout=0)
            raise

    def call(self, op: Callable[[Conn], T], *, repeatable: bool, heal: bool = True) -> T:
        """Run ``op`` on a pooled connection; the one place driver errors are translated.

        A missing schema (dropped by ``destroy()``) is created again and ``op`` retried once: the
        statement failed before it did anything. Connection failures are retried until
        ``connect_timeout_s`` when ``repeatable`` or when the server answered with an error;
        otherwise the outcome is unknown."""
        deadline = Deadline(self.connect_timeout_s, check_open=self._check_open)
        migrated = False
        while True:
            try:
                conn = self._checkout(deadline)
                try:
                    return op(conn)
                finally:
                    self.pool.putconn(conn)
            except _Unavailable as exc:
                raise self.unavailable(str(exc), "is the server running?") from None
            except _SCHEMA_MISSING as exc:
                if migrated or not heal:
                    raise self.unavailable(str(exc), "the schema is missing") from exc
                migrated = True
                self.call(self._migrate, repeatable=True, heal=False)
            except (psycopg.OperationalError, psycopg.errors.TransactionRollback) as exc:
                # An error the server sent back (it has an SQLSTATE, e.g. 57P01 when the
                # backend was terminated) means the autocommitted statement rolled back: safe
                # to run again. A connection lost without an answer leaves the outcome unknown.
                safe = repeatable or exc.sqlstate is not None
                if not deadline.again(safe=safe):
                    raise self.unavailable(str(exc), outcome_hint(safe)) from exc
            except psycopg.Error as exc:
                if exc.sqlstate is None:  # raised by the client library: a bug here, not news
                    raise
                raise self.unavailable(str(exc), "the server refused the statement") from exc

    def unavailable(self, detail: str, hint: str) -> EngineUnavailableError:
        """The error to raise: names the URL (password redacted, also inside ``detail``)."""
        password = urlsplit(self.url).password
        if password:
            detail = detail.replace(password, "***")
        return EngineUnavailableError(
            f"PostgreSQL at {redact_url(self.url)} failed: {detail.strip()} ({hint}); "
            "check the server and retry"
        )

    def _checkout(self, deadline: Deadline) -> Conn:
        """A pooled connection that is not known to be dead, or ``_Unavailable`` at the deadline.
        Short waits let each try ask the pool for a new connection (after a server restart)."""
        while True:
            self._check_open()
            left = deadline.left_s()
            if left <= 0:
                raise _Unavailable(self._no_connection_reason())
            try:
                conn = self.pool.getconn(timeout=min(left, 0.25))
            except PoolTimeout:
                continue
            except PoolClosed:
                self._check_open()
                raise
            if _usable(conn):
                return conn
            self.pool.putconn(conn)  # closed: the pool discards it and opens another

    def _no_connection_reason(self) -> str:
        errors = self._connection_class.connect_errors
        last = errors[-1] if errors else "no answer"
        return (
            f"no connection within {self.connect_timeout_s} s ({last}; "
            f"pool_max_size={self.pool_sizes[1]})"
        )


def _usable(conn: Conn) -> bool:
    """False for a connection that is closed, or that the server closed while it was idle: such
    a connection has input waiting (an error or EOF), which a zero-timeout poll sees without a
    round trip; only then is it probed with an empty query."""
    if conn.closed or conn.broken:
        return False
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN)
        if not poller.poll(0):
            return True
        conn.execute("")
    except (psycopg.Error, OSError, ValueError):
        conn.close()
        return False
    return True


def check_pool_sizes(min_size: object, max_size: object) -> None:
    low, high = positive_int("pool_min_size", min_size), positive_int("pool_max_size", max_size)
    if low > high:
        raise InvalidMessageError("pool_max_size", f"must be >= pool_min_size ({low})")
