"""What every target puts in ``describe()``: library versions and the durability settings in
force, read from the live backend, under the same keys the engines' ``describe()`` uses, so the
harness can check that an engine and its ceiling and peers ran under the same guarantees."""

from __future__ import annotations

import sqlite3
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from obsqueue.errors import InvalidMessageError, redact_url

__all__ = [
    "SQLITE_LEVELS",
    "describe_target",
    "postgres_durability",
    "redis_durability",
    "server_address",
    "sqlite_durability",
    "sqlite_synchronous",
    "versions",
]

#: ``PRAGMA synchronous`` levels; the index is the number the pragma reads back.
SQLITE_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def versions(*distributions: str) -> dict[str, str | None]:
    """The installed version of each distribution (None: not installed)."""
    found: dict[str, str | None] = {}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def describe_target(
    target: Any, durability: dict[str, Any], *libraries: str, **more: str | None
) -> dict[str, Any]:
    """``WorkloadTarget.describe()``: identity, how it is used, the versions of ``libraries``
    (distributions) and of ``more`` (e.g. ``sqlite=sqlite3.sqlite_version``), the ``options``
    in force (``recovery_s``, ``synchronous``…), durability."""
    return {
        "name": target.name,
        "kind": target.kind,
        "backend": target.backend,
        "address": redact_url(target.address),
        "usage": target.guarantees.notes[0] if target.guarantees.notes else "",
        "weaker": target.guarantees.weaker_than_obsqueue(),
        "library": {**versions(*libraries), **more},
        "options": dict(target.options),
        "durability": durability,
    }


def server_address(url: str) -> str:
    """``rq+redis://h:1/0`` -> ``redis://h:1/0``; ``postgresql+x://…`` -> ``postgresql://…``."""
    parts = urlsplit(url)
    scheme = parts.scheme.rsplit("+", 1)[-1]
    if not parts.netloc:
        raise InvalidMessageError(
            "server_url",
            f"names no server: {redact_url(url)!r}; resolve it first "
            "(obsqueue.servers.resolve_engine) or pass the server's URL",
        )
    rest = url.split("://", 1)[1]
    return f"{scheme}://{rest}"


def sqlite_synchronous(value: object) -> str:
    """A ``synchronous`` level checked (case-insensitive)."""
    level = str(value).upper()
    if level not in SQLITE_LEVELS:
        raise InvalidMessageError("synchronous", f"must be one of {SQLITE_LEVELS}, got {value!r}")
    return level


def sqlite_durability(conn: sqlite3.Connection) -> dict[str, Any]:
    """The SQLite engine's durability keys, read from ``conn``."""
    journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    level = SQLITE_LEVELS[int(conn.execute("PRAGMA synchronous").fetchone()[0])]
    return {
        "synchronous": level,
        "journal_mode": journal_mode,
        "survives_power_loss": level in ("FULL", "EXTRA"),
    }


def postgres_durability(execute: Any) -> dict[str, Any]:
    """The PostgreSQL engine's durability keys; ``execute(sql)`` returns a cursor."""
    names = (
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_sync_method",
        "synchronous_standby_names",
    )
    values = {name: execute(f"SELECT current_setting('{name}')").fetchone()[0] for name in names}
    durable = values["fsync"] == "on" and values["synchronous_commit"] != "off"
    return {**values, "server_crash_durable": durable}


def redis_durability(client: Any) -> dict[str, Any]:
    """The Redis engines' durability keys (CONFIG GET appendonly, appendfsync, save)."""
    raw = client.config_get("appendonly", "appendfsync", "save")
    cfg = {_text(k): _text(v) for k, v in raw.items()}
    durable = cfg.get("appendonly") == "yes" and cfg.get("appendfsync") == "always"
    return {
        "appendonly": cfg.get("appendonly"),
        "appendfsync": cfg.get("appendfsync"),
        "save": cfg.get("save"),
        "server_crash_durable": durable,
    }


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
