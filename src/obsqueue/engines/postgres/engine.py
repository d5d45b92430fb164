"""``postgresql://`` (also ``postgres://``) — PostgreSQL with ``FOR UPDATE SKIP LOCKED``.

On psycopg 3 with a ``psycopg_pool.ConnectionPool``. Every statement is in
``engines/postgres/queries.sql`` (named sections); only identifiers are composed in, with
``psycopg.sql.Identifier``. Each state change is one autocommitted statement.

Storage (``engines/postgres/schema.py``), per namespace: schema ``<namespace>`` holding
``obsq_messages_v1`` (one row per message that is pending, in flight or dead; acked and cleared
rows are deleted), the sequence ``obsq_tokens_v1`` (fencing tokens) and ``obsq_schema_version``.
The schema is created or migrated when an engine opens, under ``pg_advisory_xact_lock``, so
processes opening at once are safe; after ``destroy()`` it is created again on next use.

Claims: a session's *head* is its lowest-id row that is not dead. The claim statement finds the
head first, without locks, then locks that one row ``FOR UPDATE SKIP LOCKED``: when another
claimer holds it the answer is "nothing" — never the session's second row, which plain
``SKIP LOCKED`` over the session would hand out (a FIFO violation). A partial unique index on
``session_id WHERE status = 'processing'`` is the race-proof guard of one in flight per session:
whatever interleaving of claims occurs, a second in-flight row of a session cannot commit (a
claim that hits it reports nothing). Enqueues take a per-session advisory lock until commit, so
ids grow in commit order within a session and a claimer never sees a later message of a session
while an earlier one is uncommitted.

Leases and fencing: a claim draws a token from the sequence and sets the lease end from the
server clock (``now()``); acks, failures and extensions carry the token in their ``WHERE`` and
raise ``StaleClaimError`` when no row matched. A head whose lease expired is claimed again with
``attempt + 1`` by the next claim (P7), or becomes dead on its last attempt. Retries go back to
pending at their place after ``retry_delay_ms`` (exponential backoff, jitter). Dedupe: a partial
unique index over rows not dead on ``dedupe_key`` = sha256 of ``(content_session_id,
tool_use_id)`` (two 512-character ids would not fit a btree entry), with ``INSERT … ON CONFLICT
DO NOTHING RETURNING id`` and, on conflict, a read of the existing id (inserting again if that
row was acked meanwhile).

Round trips: claim = one statement; ``mark_processed`` of a message the iterator delivered
deletes it and claims the session's next head in one statement (``ack_and_claim_next``), which
the iterator then yields without another round trip — one statement and one commit per message.
A head claimed that way but not handed out (the iterator was stopped or closed first) is given
back with its attempt count restored; if the consumer process dies in between, it comes back
after its lease like any stalled claim. ``claim_ready_heads`` claims the heads of several
sessions in one statement.

The many-session iterator claims up to ``CLAIM_BATCH`` heads per statement: of a set of sessions
(``claim_heads_of``: one index probe per session, in the iterator's rotated order, stopping once
enough heads are locked) or of every session (``claim_heads_any``: a skip scan over the session
index that starts after the session the engine's previous round stopped at and wraps round, so
sessions are served in turn and a round costs about ``CLAIM_BATCH`` probes whatever their
number). Heads it held and never yielded go back in one statement (``unclaim_many``);
``_sessions_with_work`` is the same skip scan (one probe per session, not a scan of the rows).

Wakeup (``engines/postgres/wakeup.py``): ``enqueue`` sends ``pg_notify('obsq_<namespace>',
session_id)`` in the same statement (delivered on commit). One listener thread per engine, started
by the first blocked iterator, holds a dedicated connection that ``LISTEN``s and wakes the waiters
of that session; after it reconnects it wakes every waiter. The iterator re-polls every 0.2 s
regardless (the fallback). A many-session waiter hears the same channel: it wakes when a session
of its set (or any, for every session) was notified after its mark, at a cost that does not
grow with the set (``NotifyWakeup.wait_many``).

Durability: with ``fsync=on`` and ``synchronous_commit`` not ``off`` (the durable configuration)
a statement that returned is on disk and survives kill -9 of the server (P4, P5);
``describe()["durability"]`` reads both from the live server.

Errors are translated once, in ``Connections.call`` (``engines/postgres/pool.py``): connection
failures become ``EngineUnavailableError`` naming the URL with its password redacted. Pooled
connections are checked before use without a round trip (a connection the server closed has input
waiting: then it is probed and replaced), so the engine recovers by itself after a server restart
or ``pg_terminate_backend``. Reads, lease extensions, and any statement the server answered with
an error (it rolled back) are retried until ``connect_timeout_s``; a write whose reply was lost
raises (outcome unknown). Engine options: ``pool_min_size``, ``pool_max_size``.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from typing import Any, ClassVar

import psycopg
import psycopg.errors

from obsqueue.engines.base import Claimer, ObservationQueueEngine, PendingMessageWithId
from obsqueue.engines.describe import installed_version
from obsqueue.engines.handoff import Handoff
from obsqueue.engines.options import POOL_MAX_SIZE, POOL_MIN_SIZE, positive_int
from obsqueue.engines.postgres.pool import Conn, Connections, check_pool_sizes
from obsqueue.engines.postgres.schema import SCHEMA_VERSION, Schema, compose_queries
from obsqueue.engines.postgres.wakeup import NotifyWakeup
from obsqueue.engines.records import dedupe_field, delivered, stored
from obsqueue.engines.types import Capability, Claim, EnqueueResult, PendingMessage, RawMessage
from obsqueue.errors import InvalidMessageError, stale_claim

__all__ = ["SCHEMA_VERSION", "PostgresEngine", "compose_queries", "dedupe_key"]

#: How many statements one ``_claim_heads`` may run when heads it met were made dead.
_CLAIM_ROUNDS = 3


class PostgresEngine(ObservationQueueEngine):
    """Rows in one table per namespace, claimed head-first with ``FOR UPDATE SKIP LOCKED``."""

    scheme: ClassVar[str] = "postgresql"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    server_kind: ClassVar[str | None] = "postgres"
    #: Heads one claim round of the many-session iterator takes (one statement). Measured
    #: with 4 consumer processes on 20 sessions: 4 to 16 drain alike (each message costs its
    #: ack's commit, plus 1/batch of a claim's); 8 takes most of the gain while a consumer
    #: holds fewer heads that other consumers could serve, and whose leases run meanwhile.
    CLAIM_BATCH: ClassVar[int] = 8

    def __init__(
        self,
        url: str,
        *,
        pool_min_size: int = POOL_MIN_SIZE,
        pool_max_size: int = POOL_MAX_SIZE,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        check_pool_sizes(pool_min_size, pool_max_size)
        ns = self.options.namespace
        if ns.lower() in ("public", "information_schema") or ns.lower().startswith("pg_"):
            raise InvalidMessageError("namespace", f"{ns!r} is a PostgreSQL schema; pick another")
        self._q = compose_queries(ns)
        self._channel = f"obsq_{ns}"
        self._schema = Schema(ns, self._q, lock_name=f"obsqueue:{self._channel}")
        self._db = Connections(
            url,
            namespace=ns,
            connect_timeout_s=self.options.connect_timeout_s,
            pool_sizes=(pool_min_size, pool_max_size),
            check_open=self._check_open,
            migrate=self._schema.migrate,
        )
        self._wakeup = NotifyWakeup(
            url=url,
            connect_kwargs=self._db.connect_kwargs,
            channel=self._channel,
            connect_timeout_s=self.options.connect_timeout_s,
        )
        self._handoff = Handoff(
            ack_and_claim=self._ack_and_claim, unclaim=self._unclaim, wake=self._wake_session
        )
        #: Where the next claim round over every session starts (after this session id): the
        #: rounds of this engine's many-session iterators take the sessions in turn.
        self._any_after = ""
        self._db.open()

    # --------------------------------------------------------------------------- statements

    def _one(self, name: str, params: dict[str, Any], *, repeatable: bool) -> Any:
        """Run one statement and return its first row (or None)."""
        query = self._q[name]
        return self._db.call(lambda c: c.run(query, params).fetchone(), repeatable=repeatable)

    def _rowcount(self, name: str, params: dict[str, Any]) -> int:
        query = self._q[name]
        return self._db.call(lambda c: c.run(query, params).rowcount, repeatable=False)

    # --------------------------------------------------------------------------- primitives

    def _enqueue(
        self, session_id: str, content_session_id: str, message: PendingMessage, payload_json: str
    ) -> EnqueueResult:
        params = {
            "channel": self._channel,
            "session_id": session_id,
            "content_session_id": content_session_id,
            "kind": message.kind,
            "tool_use_id": message.tool_use_id,
            "dedupe_key": dedupe_key(content_session_id, message.tool_use_id),
            "payload": payload_json,
            "original_timestamp": message.original_timestamp,
        }
        for _ in range(50):
            row = self._one("enqueue", params, repeatable=False)
            if row is not None:
                self._wake_session(session_id)
                return EnqueueResult(int(row[0]))
            existing = self._one("find_duplicate", params, repeatable=True)
            if existing is not None:
                return EnqueueResult(int(existing[0]), duplicate=True)
            # the conflicting row was acked or died between the two statements: insert again
        raise self._db.unavailable("the dedupe key kept changing", "retry the enqueue")

    def _claim_params(self, consumer_id: str, lease_s: float) -> dict[str, Any]:
        return {
            "consumer_id": consumer_id,
            "lease_s": float(lease_s),
            "max_attempts": self.options.max_attempts,
        }

    def _claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        params = {**self._claim_params(consumer_id, lease_s), "session_id": session_id}
        query = self._q["claim_next"]
        row = self._db.call(lambda c: _claiming(c, query, params), repeatable=False)
        return None if row is None else _delivered(row)

    def _mark_processed(self, msg: PendingMessageWithId) -> None:
        self._handoff.ack(msg, self._ack_alone)

    def _mark_failed(self, msg: PendingMessageWithId, reason: str, retry: bool) -> None:
        self._handoff.forget(msg)
        params = {
            **_claim_of(msg),
            "retry": retry,
            "max_attempts": self.options.max_attempts,
            "delay_ms": self.retry_delay_ms(msg.attempt),
            "reason": reason,
        }
        if self._one("mark_failed", params, repeatable=False) is None:
            raise stale_claim(msg)

    def _extend_lease(self, msg: PendingMessageWithId, lease_s: float) -> Claim:
        row = self._one("extend_lease", {**_claim_of(msg), "lease_s": lease_s}, repeatable=True)
        if row is None:
            raise stale_claim(msg)
        return Claim(_claim_of(msg)["token"], int(row[0]), row[1] or "")

    def _pending_count(self, session_id: str) -> int:
        return int(self._one("pending_count", {"session_id": session_id}, repeatable=True)[0])

    def _total_depth(self) -> int:
        return int(self._one("total_depth", {}, repeatable=True)[0])

    def _clear_pending(self, session_id: str) -> int:
        return self._rowcount("clear_pending", {"session_id": session_id})

    def _reset_processing(self, session_id: str | None) -> int:
        params = {"session_id": session_id, "channel": self._channel}
        return int(self._one("reset_processing", params, repeatable=False)[0])

    # ------------------------------------------------------------------- faster hot paths

    def ack_and_claim_next(
        self,
        msg: PendingMessageWithId,
        *,
        lease_s: float | None = None,
        consumer_id: str | None = None,
    ) -> PendingMessageWithId | None:
        """Acknowledge ``msg`` and claim its session's next head, in one statement and one
        commit. Raises ``StaleClaimError`` (and claims nothing) if ``msg``'s claim is gone."""
        self._check_open()
        self._require_delivered(msg)
        lease = self._lease(lease_s)
        assert msg.claim is not None
        self._handoff.forget(msg)
        who = msg.claim.consumer_id if consumer_id is None else consumer_id
        return self._ack_and_claim(msg, who, lease)

    def _ack_and_claim(
        self, msg: PendingMessageWithId, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        params = {
            **self._claim_params(consumer_id, lease_s),
            **_claim_of(msg),
            "session_id": msg.session_id,
        }
        query = self._q["ack_and_claim_next"]
        row = self._db.call(lambda c: _claiming(c, query, params), repeatable=False)
        if row is None:  # the guard index refused a claim: the ack rolled back with it
            self._ack_alone(msg)
            return None
        if not row[0]:
            raise stale_claim(msg)
        return None if row[1] is None else _delivered(row[1:])

    def _ack_alone(self, msg: PendingMessageWithId) -> None:
        if self._one("mark_processed", _claim_of(msg), repeatable=False) is None:
            raise stale_claim(msg)

    def claim_ready_heads(
        self, limit: int, lease_s: float | None = None, *, consumer_id: str = ""
    ) -> list[PendingMessageWithId]:
        """Claim the heads of up to ``limit`` sessions that have one ready, oldest first, in
        one statement (for a consumer serving many sessions). It walks due rows oldest first and
        keeps those that head their session, so a long backlog behind a head in flight is walked
        over on each call: it suits many sessions with short queues."""
        self._check_open()
        positive_int("limit", limit)
        lease = self._lease(lease_s)
        params = {**self._claim_params(consumer_id, lease), "limit": limit}
        query = self._q["claim_ready_heads"]

        def claim(conn: Conn) -> list[Any]:
            try:
                return conn.run(query, params).fetchall()
            except psycopg.errors.UniqueViolation:
                return []

        return [_delivered(row) for row in self._db.call(claim, repeatable=False)]

    # ------------------------------------------------------- the many-session iterator's hooks

    def _claim_heads(
        self, sids: tuple[str, ...] | None, consumer_id: str, lease_s: float, limit: int
    ) -> list[PendingMessageWithId]:
        """The heads of up to ``limit`` sessions of ``sids`` (in its order) or of every session
        (in turn, from where the last round stopped), in one statement (``claim_heads_of`` /
        ``claim_heads_any``). When a head was made dead (out of attempts) and fewer than
        ``limit`` came, it looks again: that session's next row is its head now."""
        params: dict[str, Any] = {**self._claim_params(consumer_id, lease_s), "limit": limit}
        if sids is None:
            query, params["after"] = self._q["claim_heads_any"], self._any_after
        else:
            query, params["sids"] = self._q["claim_heads_of"], list(sids)

        def claim(conn: Conn) -> list[Any]:
            try:
                return conn.run(query, params).fetchall()
            except psycopg.errors.UniqueViolation:  # another claim won a session: none of them
                return [(False, None)]

        heads: list[PendingMessageWithId] = []
        for _ in range(_CLAIM_ROUNDS):
            rows = self._db.call(claim, repeatable=False)  # (claimed, next "after", message...)
            heads += [_delivered(row[2:]) for row in rows if row[0]]
            if sids is None and rows and rows[0][1] is not None:
                self._any_after = params["after"] = rows[0][1]
            if len(heads) >= limit or all(row[0] for row in rows):
                break
            params["limit"] = limit - len(heads)
        return heads

    def _unclaim_heads(self, msgs: list[PendingMessageWithId]) -> None:
        """Give back heads claimed and never yielded, attempt restored, in one statement that
        also notifies their sessions; best effort (else their leases expire)."""
        claims = [_claim_of(m) for m in msgs]
        params = {
            "ids": [c["id"] for c in claims],
            "tokens": [c["token"] for c in claims],
            "channel": self._channel,
        }
        with contextlib.suppress(Exception), self._db.pool.connection(timeout=1.0) as conn:
            conn.execute(self._q["unclaim_many"], params)
        for sid in {m.session_id for m in msgs}:
            self._wake_session(sid)

    def _sessions_with_work(self) -> list[str]:
        query = self._q["sessions_with_work"]
        rows = self._db.call(lambda c: c.run(query, {"after": ""}).fetchall(), repeatable=True)
        return [row[0] for row in rows]

    def _wakeup_mark_many(self, sids: tuple[str, ...] | None) -> object:
        return self._wakeup.mark_many()

    def _wait_for_any(self, sids: tuple[str, ...] | None, timeout_s: float, mark: object) -> None:
        self._wakeup.wait_many(sids, timeout_s, mark)

    # ------------------------------------------------ the claim hook: prefetched heads first

    def _claimer(
        self, sid: str, consumer_id: str, lease_s: float, stop: threading.Event | None
    ) -> contextlib.AbstractContextManager[Claimer]:
        """The iterator's claims, plus a slot into which ``mark_processed`` puts the next head
        it claimed in the same statement as the ack (``engines/handoff.py``)."""
        return self._handoff.claimer(
            sid, consumer_id, lease_s, stop, lambda: self._claim_next(sid, consumer_id, lease_s)
        )

    def _unclaim(self, msg: PendingMessageWithId) -> None:
        """Give back a prefetched head never handed out; best effort (else its lease expires)."""
        with contextlib.suppress(Exception), self._db.pool.connection(timeout=1.0) as conn:
            conn.execute(self._q["unclaim"], _claim_of(msg))

    # ------------------------------------------------------------------------------ wakeup

    def _notify_local(self) -> None:
        """Not used: enqueues wake their own session (``_wake_session``), resets and enqueues of
        other processes arrive by NOTIFY, and close wakes everyone (``NotifyWakeup.stop``)."""

    def _wake_session(self, session_id: str) -> None:
        self._wakeup.wake_session(session_id)

    def _wakeup_mark(self, session_id: str) -> object:
        return self._wakeup.mark(session_id)

    def _wait_for_work(self, session_id: str, timeout_s: float, mark: object) -> None:
        self._wakeup.wait(session_id, timeout_s, mark)

    # ------------------------------------------------------------- oracle, describe, destroy

    def inspect_raw(self) -> list[RawMessage]:
        self._check_open()
        query = self._q["inspect_raw"]
        # a cursor of its own: the kept cursor would hold this whole result while idle
        rows = self._db.call(lambda c: c.execute(query).fetchall(), repeatable=True)
        return [_raw(row) for row in rows]

    def describe(self) -> dict[str, Any]:
        self._check_open()
        version, version_num, fsync, sync_commit, fpw, sync_method, standbys = self._one(
            "server_settings", {}, repeatable=True
        )
        return {
            "library": {
                "psycopg": psycopg.__version__,
                "psycopg_pool": installed_version("psycopg-pool"),
            },
            "client": {
                "implementation": psycopg.pq.__impl__,
                "libpq": psycopg.pq.version(),
                "pool_min_size": self._db.pool_sizes[0],
                "pool_max_size": self._db.pool_sizes[1],
                "connect_timeout_s": self.options.connect_timeout_s,
            },
            "server": {"kind": "postgres", "version": version, "version_num": version_num},
            "durability": {
                "fsync": fsync,
                "synchronous_commit": sync_commit,
                "full_page_writes": fpw,
                "wal_sync_method": sync_method,
                "synchronous_standby_names": standbys,
                "server_crash_durable": fsync == "on" and sync_commit != "off",
            },
        }

    def destroy(self) -> None:
        """Drop the namespace's schema (it is created again if this engine is used again)."""
        self._check_open()
        self._db.call(self._schema.drop, repeatable=True, heal=False)

    def _close(self) -> None:
        self._handoff.close()
        self._wakeup.stop(self._db.pool)
        self._db.pool.close(timeout=1.0)


# ------------------------------------------------------------------------------ helpers


def dedupe_key(content_session_id: str, tool_use_id: str | None) -> bytes | None:
    """What the dedupe index holds: sha256 of the dedupe field (``types.dedupe_field``), as two
    512-character ids would not fit a btree entry."""
    if tool_use_id is None:
        return None
    return hashlib.sha256(dedupe_field(content_session_id, tool_use_id).encode()).digest()


def _claiming(conn: Conn, query: bytes, params: dict[str, Any]) -> Any:
    """Run a claim; a refusal by the one-in-flight index means another claim won: nothing."""
    try:
        return conn.run(query, params).fetchone()
    except psycopg.errors.UniqueViolation:
        return None


def _claim_of(msg: PendingMessageWithId) -> dict[str, Any]:
    assert msg.claim is not None  # checked by the base class
    return {"id": msg.id, "token": msg.claim.token}


def _delivered(row: Any) -> PendingMessageWithId:
    mid, sid, csid, kind, tool_use_id, payload, ts, attempt, token, lease, who, enq = row
    return delivered(
        mid, sid, csid, kind, tool_use_id, payload, ts, attempt, (token, lease, who), enq
    )


def _raw(row: Any) -> RawMessage:
    mid, sid, csid, kind, tool_use_id, payload, ts, status, attempt, token, lease, error = row
    return stored(
        mid, sid, csid, kind, tool_use_id, payload, ts, status, attempt, (token, lease), error
    )
