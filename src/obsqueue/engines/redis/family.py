"""What every engine on Redis shares: ``redis://``, ``rq+redis://``, ``dramatiq+redis://`` and
``huey+redis://`` are :class:`RedisBacked` — one :class:`~obsqueue.engines.redis.link.RedisLink`
each, built from the two options they all take, and checked reachable before the engine is used.
"""

from __future__ import annotations

from typing import Any, ClassVar

from obsqueue.engines.base import ObservationQueueEngine
from obsqueue.engines.options import MAX_CONNECTIONS, SOCKET_TIMEOUT_S
from obsqueue.engines.redis.link import RedisLink

__all__ = ["RedisBacked"]


class RedisBacked(ObservationQueueEngine):
    """An engine whose backend is Redis. Options: ``socket_timeout_s`` (how long one reply may
    take) and ``max_connections`` (the pool's bound), besides the common ones."""

    server_kind: ClassVar[str | None] = "redis"
    #: Replies as ``str`` (the native engine) or as ``bytes`` (the library adapters).
    DECODE_RESPONSES: ClassVar[bool] = False

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        self._link = RedisLink.for_engine(
            self,
            self._redis_url(url),
            socket_timeout_s=socket_timeout_s,
            max_connections=max_connections,
            decode_responses=self.DECODE_RESPONSES,
        )
        self._link.check_reachable()

    def _redis_url(self, url: str) -> str:
        """The plain Redis URL behind the engine's: ``rq+redis://h/0`` -> ``redis://h/0``."""
        scheme = url.partition("://")[0]
        return url.split("+", 1)[1] if "+" in scheme else url
