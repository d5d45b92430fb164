"""The Redis store of the huey+redis adapter's glue (``huey/glue.py``).

Keys under ``{namespace}:huey:``; a slot changes in a WATCH/MULTI/EXEC transaction, tried again on
conflict (optimistic: contention is per session) at most ``CONTENDED_ROUNDS`` times
(``engines/retry.py``). Keys (P = ``{namespace}:huey:``): ``P slot:<session>`` (the slot, JSON),
``P env:<id>`` (a held, orphaned or dead message's envelope), ``P dead`` (hash id -> session,
attempt, error), ``P d:<dedupe field>`` (dedupe record: [id, session, reserved_at_ms]; the field
is ``types.dedupe_field``), ``P ids`` and ``P tokens`` (INCR counters), ``P sessions`` (set),
``P w:<session>`` (wake list, at most one token, 60 s expiry).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

from obsqueue.engines.huey.glue import DeadRow, GlueStore, Prepared, Slot, Tx, decide_existing
from obsqueue.engines.records import dedupe_field
from obsqueue.engines.redis.link import RedisLink, text, unlink_matching
from obsqueue.engines.retry import CONTENDED_ROUNDS
from obsqueue.engines.types import now_ms
from obsqueue.errors import EngineUnavailableError

__all__ = ["RedisGlue"]

T = TypeVar("T")

WAKE_TTL_MS = 60_000


class RedisGlue(GlueStore):
    """Glue keys under ``{namespace}:huey:``; slot updates are WATCH/MULTI/EXEC transactions."""

    def __init__(self, link: RedisLink, namespace: str) -> None:
        self._link = link
        self._r: redis.Redis[bytes] = link.client
        self._p = "{" + namespace + "}:huey:"

    def _pipeline(self) -> Any:
        """A transactional pipeline; after WATCH it runs commands at once (typed Any: redis-py
        types a watching pipeline's replies as the pipeline itself)."""
        return self._r.pipeline(transaction=True)

    def _transact(self, body: Callable[[Any], T]) -> T:
        """Run ``body`` on a transactional pipeline (it WATCHes, reads, then MULTI/EXEC), again
        when a watched key changed meanwhile — at most ``CONTENDED_ROUNDS`` times."""
        with self._pipeline() as pipe:
            for _ in range(CONTENDED_ROUNDS):
                try:
                    return body(pipe)
                except redis.WatchError:
                    continue
        raise EngineUnavailableError(
            f"Redis keys under {self._p} kept changing for {CONTENDED_ROUNDS} optimistic "
            "transactions in a row (too many writers on one session?); retry"
        )

    def _k(self, kind: str, name: object = "") -> str:
        return f"{self._p}{kind}{name}"

    def update(self, session: str, fn: Callable[[Tx], T], *, snapshot_first: bool = False) -> T:
        if snapshot_first and (found := self._snapshot(session, fn)):
            return found[0]
        key = self._k("slot:", session)

        def body(pipe: Any) -> T:
            pipe.watch(key)
            slot = Slot.loads(pipe.get(key))
            result, tx = self._run(session, slot, fn, lambda: int(pipe.incr(self._k("tokens"))))
            if not tx.dirty():
                pipe.reset()
                return result
            deletes = self._watched_forgets(pipe, tx.ops)
            pipe.multi()
            pipe.set(key, tx.slot.dumps())
            for op in tx.ops:
                self._apply(pipe, session, op)
            if deletes:
                pipe.delete(*deletes)
            pipe.execute()
            return result

        return self._transact(body)

    def _watched_forgets(self, pipe: Any, ops: list[tuple[Any, ...]]) -> list[str]:
        """Dedupe keys to delete: those that still name the forgotten id (read under WATCH)."""
        wanted = [
            (self._k("d:", dedupe_field(op[1], op[2])), op[3]) for op in ops if op[0] == "forget"
        ]
        if not wanted:
            return []
        pipe.watch(*[k for k, _ in wanted])
        values = pipe.mget([k for k, _ in wanted])
        return [k for (k, mid), v in zip(wanted, values, strict=True) if v and _rec(v)[0] == mid]

    def _apply(self, pipe: Any, session: str, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "put_env":
            pipe.set(self._k("env:", op[1]), op[2])
        elif kind == "drop_env":
            pipe.delete(self._k("env:", op[1]))
        elif kind == "bury":
            row = {"session": session, "attempt": op[2], "error": op[3]}
            pipe.hset(self._k("dead"), str(op[1]), json.dumps(row))
        elif kind == "wake":
            self._push_wake(pipe, session)

    def _push_wake(self, pipe: Any, session: str) -> None:
        wkey = self._k("w:", session)
        pipe.lpush(wkey, "1")
        pipe.ltrim(wkey, 0, 0)
        pipe.pexpire(wkey, WAKE_TTL_MS)

    def read_slots(self, sessions: Sequence[str]) -> dict[str, Slot]:
        if not sessions:
            return {}
        docs = self._r.mget([self._k("slot:", s) for s in sessions])
        return {s: Slot.loads(d) for s, d in zip(sessions, docs, strict=True)}

    def prepare(self, session: str, csid: str, tuid: str | None, stale_id: int) -> Prepared:
        if tuid is None:
            pipe = self._r.pipeline(transaction=True)
            pipe.incr(self._k("ids"))
            pipe.sadd(self._k("sessions"), session)
            return Prepared("new", int(pipe.execute()[0]))
        dkey = self._k("d:", dedupe_field(csid, tuid))

        def body(pipe: Any) -> Prepared:
            pipe.watch(dkey)
            raw = pipe.get(dkey)
            if raw is not None and _rec(raw)[0] != stale_id:
                pipe.reset()
                rid, rsession, rat = _rec(raw)
                slot = self.read_slots([rsession])[rsession]
                return decide_existing(rid, rsession, rat, slot)
            message_id = int(pipe.incr(self._k("ids")))
            pipe.multi()
            pipe.set(dkey, json.dumps([message_id, session, now_ms()]))
            pipe.sadd(self._k("sessions"), session)
            pipe.execute()
            return Prepared("new", message_id)

        return self._transact(body)

    def forget_many(self, keys: Sequence[tuple[str, str, int]]) -> None:
        if not keys:
            return
        ops = [("forget", csid, tuid, message_id) for csid, tuid, message_id in keys]

        def body(pipe: Any) -> None:
            deletes = self._watched_forgets(pipe, ops)
            pipe.multi()
            if deletes:
                pipe.delete(*deletes)
            pipe.execute()

        self._transact(body)

    def envs(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        values = self._r.mget([self._k("env:", i) for i in ids])
        return {i: text(v) for i, v in zip(ids, values, strict=True) if v is not None}

    def dead(self) -> list[DeadRow]:
        rows = self._r.hgetall(self._k("dead"))
        out = [DeadRow(int(k), **json.loads(v)) for k, v in rows.items()]
        return sorted(out, key=lambda r: r.id)

    def sessions(self) -> list[str]:
        return sorted(text(s) for s in self._r.smembers(self._k("sessions")))

    def wake(self, session: str) -> None:
        pipe = self._r.pipeline(transaction=False)
        self._push_wake(pipe, session)
        pipe.execute()

    def wait_mark(self, session: str) -> object:
        return None  # the wake list itself remembers a wake that comes before the wait

    def wait(self, session: str, timeout_s: float, mark: object) -> None:
        self._link.wait_for_wake(self._k("w:", session), timeout_s)

    def destroy(self) -> None:
        unlink_matching(self._r, self._p + "*")

    def close(self) -> None:
        """The client belongs to the engine, which closes it."""


def _rec(raw: str | bytes) -> tuple[int, str, int]:
    rid, rsession, rat = json.loads(raw)
    return int(rid), str(rsession), int(rat)
