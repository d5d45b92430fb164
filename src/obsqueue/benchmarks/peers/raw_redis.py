"""The Redis ceiling: ``RPUSH`` to a list per session; ``LMOVE`` to the consumer's processing list;
``LREM`` from it after processing — the fewest commands that leave a claimed message in Redis until
it is acknowledged (``delivered`` is reported once ``LMOVE`` has moved it). No leases, tokens,
dedupe, wakeup or retries.

A consumer takes one message from each of its sessions' lists per pass — the ``LMOVE``s of a pass in
one pipelined round trip, then each message's work and ``LREM`` in turn (all sessions: the lists
found by ``SCAN``, looked up again whenever a pass finds nothing) — polling while the lists are
empty (1 ms doubling to 50 ms). The server's ``appendonly``/``appendfsync`` are what they are;
``describe()`` reads them back.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from obsqueue.benchmarks.peers.base import RedisTarget, holding
from obsqueue.benchmarks.peers.raw_sql import poll_backoff
from obsqueue.benchmarks.peers.tasks import work
from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession

__all__ = ["RawRedisTarget", "unlink_prefix"]


def unlink_prefix(client: Any, prefix: str) -> None:
    """UNLINK every key that starts with ``prefix`` (SCAN, then batches of 500)."""
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        client.unlink(*keys[i : i + 500])


class _RedisSession(TargetSession):
    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def _queue(self, session_id: str) -> str:
        return f"{self._prefix}q:{session_id}"

    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        self._client.rpush(self._queue(session_id), payload)

    def _discover(self, sessions: Sequence[str] | None) -> list[str]:
        if sessions is not None:
            return [self._queue(s) for s in sessions]
        return sorted(k.decode() for k in self._client.scan_iter(f"{self._prefix}q:*", count=1000))

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        processing = f"{self._prefix}processing:{uuid.uuid4().hex}"
        start = len(f"{self._prefix}q:")
        queues = self._discover(sessions)

        def one_pass() -> bool:
            nonlocal queues
            found = False
            with self._client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    pipe.lmove(queue, processing, "LEFT", "RIGHT")
                items = pipe.execute()
            for queue, item in zip(queues, items, strict=True):
                if item is None:
                    continue
                self.delivered(item.decode())
                work()
                self._client.lrem(processing, 1, item)
                on_message(queue[start:], item.decode())
                found = True
            if not found and sessions is None:
                queues = self._discover(None)
            return found

        poll_backoff(stop, one_pass)

    def pending(self) -> int:
        keys = list(self._client.scan_iter(f"{self._prefix}*", count=1000))
        with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
            return sum(pipe.execute())

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class RawRedisTarget(RedisTarget):
    """The Redis ceiling at ``address`` (a ``redis://`` URL); keys under ``obsq_ceiling:<ns>:``."""

    name: ClassVar[str] = "raw-redis"
    kind: ClassVar[str] = "ceiling"
    guarantees: ClassVar[Guarantees] = holding(
        "ack_after_processing",
        notes=(
            "raw Redis: RPUSH to a list per session; LMOVE to a processing list; LREM",
            "order holds only while one consumer drains a session",
            "a killed consumer's message stays in its processing list: nothing returns it",
        ),
    )
    consumes_given_sessions: ClassVar[bool] = True

    @property
    def prefix(self) -> str:
        return f"obsq_ceiling:{self.namespace}:"

    def prepare(self) -> None:
        with self.redis_client() as client:
            unlink_prefix(client, self.prefix)

    def session(self) -> TargetSession:
        return _RedisSession(self.redis_client(), self.prefix)

    def cleanup(self) -> None:
        self.prepare()
