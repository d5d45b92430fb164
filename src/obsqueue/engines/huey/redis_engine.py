"""``huey+redis://host:port/db`` — Huey's ``RedisHuey`` plus obsqueue's glue in the same Redis.

The protocol is ``huey/engine.py``'s (its docstring lists what Huey gives and what obsqueue adds);
this variant keeps the glue in Redis (``huey/redis_store.py``) and reaches Redis through the
shared link (``redis/link.py``): one call may bundle several writes, so only reads are retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import redis
from huey import RedisHuey

from obsqueue.engines.huey.engine import COMMON_GLUE, HueyEngine
from obsqueue.engines.huey.redis_store import RedisGlue
from obsqueue.engines.redis.family import RedisBacked
from obsqueue.engines.redis.link import library_versions
from obsqueue.engines.types import Capability

__all__ = ["HueyRedisEngine"]

T = TypeVar("T")


class HueyRedisEngine(HueyEngine, RedisBacked):
    """Huey's ``RedisHuey`` (one list per session) plus the glue in the same Redis."""

    scheme: ClassVar[str] = "huey+redis"
    # SERVER_CRASH_DURABLE holds in the durable configuration only (appendfsync always).
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    glue: ClassVar[tuple[str, ...]] = (*COMMON_GLUE, "wake-up list per session (BLPOP)")

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._redis: redis.Redis[bytes] = self._link.client
        self._store = RedisGlue(self._link, self.options.namespace)

    def _new_huey(self, name: str) -> Any:
        return RedisHuey(
            name, results=False, connection_pool=self._link.pool, blocking=False, clean_name=False
        )

    def _raw_queue(self, huey: Any) -> list[bytes]:
        return list(reversed(self._redis.lrange(huey.storage.queue_key, 0, -1)))

    def _call(self, op: Callable[[], T], *, repeatable: bool = False) -> T:
        return self._link.call(op, repeatable=repeatable, single=False)

    def describe(self) -> dict[str, Any]:
        self._check_open()
        server = self._link.server(mode=False)
        return {
            "library": library_versions("huey"),
            "client": {"connect_timeout_s": self.options.connect_timeout_s},
            "server": server,
            "durability": self._link.durability(aof_fallback=False),
        }

    def _close(self) -> None:
        self._release_hueys()
        self._link.close()
