"""The references the harness measures beside each engine, in the same round: the ceiling (the
raw backend doing the work with the fewest commands) and the peer libraries used as their own
users use them. Each is a ``WorkloadTarget`` (``benchmarks/targets.py``) with its
``Guarantees`` — what it holds of obsqueue's properties — recorded beside its figures.

``targets_for(engine_url, server_url, file_path)`` gives the ceiling and every peer of an
engine's backend, at the engine's own durability settings:

========== ============== ===================================================================
backend    ceiling        peers
========== ============== ===================================================================
postgres   raw-postgres   pgqueuer, procrastinate
redis      raw-redis      rq, dramatiq, huey, bullmq
sqlite     raw-sqlite     huey-sqlite
memory     —              —  (also any other backend, e.g. RabbitMQ: nothing to compare with)
========== ============== ===================================================================

A target's module imports its library only when the target is prepared or opened, so
``targets_for`` needs none of them installed; the ``bench`` extra installs them all.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from obsqueue.benchmarks.peers.bullmq import BullmqTarget
from obsqueue.benchmarks.peers.dramatiq import DramatiqTarget
from obsqueue.benchmarks.peers.huey import HueyRedisTarget, HueySqliteTarget
from obsqueue.benchmarks.peers.pgqueuer import PgqueuerTarget
from obsqueue.benchmarks.peers.procrastinate import ProcrastinateTarget
from obsqueue.benchmarks.peers.raw_redis import RawRedisTarget
from obsqueue.benchmarks.peers.raw_sql import RawPostgresTarget, RawSqliteTarget
from obsqueue.benchmarks.peers.rq import RqTarget
from obsqueue.benchmarks.peers.settings import server_address, sqlite_synchronous
from obsqueue.benchmarks.targets import WorkloadTarget
from obsqueue.errors import InvalidMessageError, redact_url

__all__ = [
    "BY_BACKEND",
    "BullmqTarget",
    "DramatiqTarget",
    "HueyRedisTarget",
    "HueySqliteTarget",
    "PgqueuerTarget",
    "ProcrastinateTarget",
    "RawPostgresTarget",
    "RawRedisTarget",
    "RawSqliteTarget",
    "RqTarget",
    "backend_of",
    "targets_for",
]

#: The ceiling first, then the peers, for each backend.
BY_BACKEND: dict[str, tuple[type[WorkloadTarget], ...]] = {
    "postgres": (RawPostgresTarget, PgqueuerTarget, ProcrastinateTarget),
    "redis": (RawRedisTarget, RqTarget, DramatiqTarget, HueyRedisTarget, BullmqTarget),
    "sqlite": (RawSqliteTarget, HueySqliteTarget),
}
_BACKENDS = {"postgresql": "postgres", "postgres": "postgres", "redis": "redis", "sqlite": "sqlite"}


def backend_of(engine_url: str) -> str | None:
    """``huey+redis://…`` -> ``"redis"``; None for a backend with no references (memory, amqp)."""
    if "://" not in engine_url:
        raise InvalidMessageError("engine_url", f"must look like scheme://…, got {engine_url!r}")
    return _BACKENDS.get(urlsplit(engine_url).scheme.lower().rsplit("+", 1)[-1])


def targets_for(
    engine_url: str, server_url: str | None, file_path: str | None
) -> list[WorkloadTarget]:
    """The ceiling and every peer for ``engine_url``'s backend, at its durability settings.

    ``server_url``: the server the engine runs on (default: the engine URL's own host).
    ``file_path``: for SQLite, where the targets keep their files — each gets
    ``<file_path>.<target name>`` (default: beside the engine's file). The SQLite targets run
    at the engine URL's ``synchronous`` (default FULL, the SQLite engine's default)."""
    backend = backend_of(engine_url)
    if backend is None:
        return []
    classes = BY_BACKEND[backend]
    if backend == "sqlite":
        parts = urlsplit(engine_url)
        base = file_path or (parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not base:
            raise InvalidMessageError(
                "file_path",
                f"{redact_url(engine_url)} names no file: pass file_path for the targets' files",
            )
        query = dict(parse_qsl(parts.query))
        options = {"synchronous": sqlite_synchronous(query.get("synchronous", "FULL"))}
        return [cls(f"{base}.{cls.name}", options=options) for cls in classes]
    address = server_address(server_url or engine_url)
    return [cls(address) for cls in classes]
