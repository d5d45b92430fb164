"""What a backend holds on disk or in memory, read from the backend itself (not the target).

``storage_bytes(backend, address)``: PostgreSQL ``pg_database_size`` of the database, Redis
``INFO memory`` ``used_memory``, SQLite the file plus its WAL. Read before and after a preload,
the difference over the messages is ``server_bytes_per_pending``. ``None`` where the backend has
no such figure (memory).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

__all__ = ["backend_of", "storage_bytes"]


def backend_of(address: str) -> str:
    """``huey+sqlite:///q.db`` -> sqlite; ``postgresql://…`` -> postgres; a path -> sqlite."""
    if "://" not in address:
        return "sqlite"
    scheme = urlsplit(address).scheme.lower().rsplit("+", 1)[-1]
    return "postgres" if scheme in ("postgresql", "postgres") else scheme


def storage_bytes(backend: str, address: str) -> int | None:
    if backend == "postgres":
        return _postgres(address)
    if backend == "redis":
        return _redis(address)
    if backend == "sqlite":
        return _sqlite(address)
    return None


def _server_url(address: str, scheme: str) -> str:
    parts = urlsplit(address)
    return f"{scheme}://{parts.netloc}{parts.path}"


def _postgres(address: str) -> int:
    import psycopg

    with psycopg.connect(_server_url(address, "postgresql"), autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def _redis(address: str) -> int:
    import redis

    client = redis.Redis.from_url(_server_url(address, "redis"))
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def _sqlite(address: str) -> int:
    path = address
    if "://" in address:
        raw = urlsplit(address).path
        path = raw[1:] if raw.startswith("/") else raw
    return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
