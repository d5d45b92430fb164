"""Claiming heads for ``sqlite://``: one session's, or the claimable heads of many sessions in
one transaction (the many-session iterator's claim round).

Every claim decides a head the same way (:func:`decide`): pending and due, or in flight with
its lease run out, is claimable; a claimable head already in flight on its last attempt is made
dead instead (a stall past ``max_attempts``). A claim reads first without the write lock and
takes it (``BEGIN IMMEDIATE``) only when some head looks claimable, then reads again under the
lock and decides there, so idle consumers never queue for the lock and two consumers never claim
one head. A round over many sessions reads their heads with one statement (``due_heads``: the
set as a JSON array through ``json_each``, or every session with work, oldest head first), draws
the tokens of all its claims with one bump of the tokens table, and commits once: one fsync for
up to ``limit`` claims.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar

from obsqueue.engines.sqlite.rows import first, to_delivered
from obsqueue.engines.types import PendingMessageWithId, now_ms

__all__ = ["Heads", "decide"]

T = TypeVar("T")
Conn = sqlite3.Connection


class Runner(Protocol):
    """The engine's ``_run``: ``op`` on a pooled connection, in ``BEGIN IMMEDIATE`` if ``write``."""

    def __call__(self, op: Callable[[Conn], T], *, write: bool = False) -> T: ...


def decide(
    head: sqlite3.Row | None, now: int, out_of_attempts: Callable[[int], bool]
) -> Literal["claim", "kill"] | None:
    """What a claim at ``now`` does with a session's head: nothing (None: no head, or not due),
    claim it, or kill it (in flight, lease run out, no attempt left)."""
    if head is None:
        return None
    if head["status"] == "processing":
        if head["lease_expires_at_ms"] > now:
            return None
        return "kill" if out_of_attempts(head["attempt"]) else "claim"
    return "claim" if head["available_at_ms"] <= now else None


class Heads:
    """The claims of one engine: ``run`` is its ``_run``, ``q`` its statements."""

    KILL_REASON = "lease expired on the last attempt"

    def __init__(
        self, *, run: Runner, q: dict[str, str], out_of_attempts: Callable[[int], bool]
    ) -> None:
        self._run = run
        self._q = q
        self._out_of_attempts = out_of_attempts

    # ------------------------------------------------------------------------ one session

    def claim_next(
        self, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        """Claim the session's head if it is claimable; the lock only when it looks so."""
        head = first(self._run(lambda conn: self._head(conn, session_id)))
        if decide(head, now_ms(), self._out_of_attempts) is None:
            return None  # decided without the write lock: idle consumers never queue for it
        return self._run(
            lambda conn: self.claim_head(conn, session_id, consumer_id, lease_s), write=True
        )

    def claim_head(
        self, conn: Conn, session_id: str, consumer_id: str, lease_s: float
    ) -> PendingMessageWithId | None:
        """Inside the caller's write transaction: claim (or kill) the session's head."""
        head = first(self._head(conn, session_id))
        action = decide(head, now_ms(), self._out_of_attempts)
        if action == "kill":
            conn.execute(self._q["kill"], {"id": head["id"], "reason": self.KILL_REASON})
        if action != "claim":
            return None
        return self._claim(conn, [head], consumer_id, lease_s)[0]

    def _head(self, conn: Conn, session_id: str) -> list[Any]:
        return conn.execute(self._q["head"], {"session_id": session_id}).fetchall()

    # ----------------------------------------------------------------------- many sessions

    def sessions_with_work(self) -> list[str]:
        """Every session with a message pending or in flight (one query)."""
        return self._run(self._sessions)

    def claim_many(
        self, sids: Sequence[str] | None, consumer_id: str, lease_s: float, limit: int
    ) -> list[PendingMessageWithId]:
        """Claim the claimable heads of up to ``limit`` distinct sessions of ``sids`` (in that
        order; None: every session, oldest head first) in one write transaction."""
        if not self._run(lambda conn: self._due_heads(conn, sids, 1)):
            return []  # nothing claimable: decided without the write lock
        return self._run(
            lambda conn: self._claim_due(conn, sids, consumer_id, lease_s, limit), write=True
        )

    def unclaim_many(self, msgs: Sequence[PendingMessageWithId]) -> None:
        """Give back heads claimed but never handed out, attempt restored, in one transaction;
        best effort (else each comes back when its lease runs out)."""
        params = []
        for msg in msgs:
            assert msg.claim is not None
            params.append({"id": msg.id, "token": msg.claim.token})
        with contextlib.suppress(Exception):
            self._run(lambda conn: conn.executemany(self._q["unclaim"], params), write=True)

    def _sessions(self, conn: Conn) -> list[str]:
        return [row[0] for row in conn.execute(self._q["sessions_with_work"]).fetchall()]

    def _due_heads(self, conn: Conn, sids: Sequence[str] | None, limit: int) -> list[Any]:
        params = {
            "sids": json.dumps(list(self._sessions(conn) if sids is None else sids)),
            "by_age": sids is None,
            "now": now_ms(),
            "limit": limit,
        }
        return conn.execute(self._q["due_heads"], params).fetchall()

    def _claim_due(
        self,
        conn: Conn,
        sids: Sequence[str] | None,
        consumer_id: str,
        lease_s: float,
        limit: int,
    ) -> list[PendingMessageWithId]:
        claimed: list[PendingMessageWithId] = []
        while len(claimed) < limit:
            heads = self._due_heads(conn, sids, limit - len(claimed))
            now = now_ms()
            actions = [decide(head, now, self._out_of_attempts) for head in heads]
            for head, action in zip(heads, actions, strict=True):
                if action == "kill":
                    conn.execute(self._q["kill"], {"id": head["id"], "reason": self.KILL_REASON})
            todo = [head for head, action in zip(heads, actions, strict=True) if action == "claim"]
            claimed.extend(self._claim(conn, todo, consumer_id, lease_s))
            if "kill" not in actions:
                break  # else the killed heads' sessions may have a claimable head now
        return claimed

    def _claim(
        self, conn: Conn, heads: Sequence[sqlite3.Row], consumer_id: str, lease_s: float
    ) -> list[PendingMessageWithId]:
        """Claim ``heads`` (each decided claimable) with one new token each."""
        if not heads:
            return []
        last = conn.execute(self._q["next_tokens"], {"n": len(heads)}).fetchall()[0][0]
        lease_end = now_ms() + int(lease_s * 1000)
        claimed = []
        for token, head in enumerate(heads, start=last - len(heads) + 1):
            params = {
                "id": head["id"],
                "token": token,
                "lease_expires_at_ms": lease_end,
                "consumer_id": consumer_id,
            }
            claimed.append(to_delivered(conn.execute(self._q["claim"], params).fetchall()[0]))
        return claimed
