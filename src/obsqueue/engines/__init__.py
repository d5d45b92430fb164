"""A lazy registry that maps URL schemes to engine classes.

Built-in engines are named by ``"module:Class"`` strings and imported only when opened, so
``import obsqueue`` imports no driver. Downstream packages add engines through the entry-point
group ``obsqueue.engines`` (name = URL scheme, value = ``"package.module:EngineClass"``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from obsqueue.engines.base import ObservationQueueEngine
from obsqueue.errors import EngineUnavailableError, InvalidMessageError, redact_url

__all__ = [
    "EngineEntry",
    "engine_class",
    "open_engine",
    "register_engine",
    "registered_engines",
    "runtime_registrations",
    "scheme_of",
]

ENTRY_POINT_GROUP = "obsqueue.engines"


@dataclass(frozen=True, slots=True)
class EngineEntry:
    """One registered scheme: where its class lives and the extra that installs its driver."""

    scheme: str
    target: str
    extra: str | None = None
    source: str = "builtin"


_BUILTIN: tuple[EngineEntry, ...] = (
    EngineEntry("memory", "obsqueue.engines.memory:MemoryEngine"),
    EngineEntry("sqlite", "obsqueue.engines.sqlite.engine:SqliteEngine"),
    EngineEntry("postgresql", "obsqueue.engines.postgres.engine:PostgresEngine", "postgres"),
    EngineEntry("postgres", "obsqueue.engines.postgres.engine:PostgresEngine", "postgres"),
    EngineEntry("redis", "obsqueue.engines.redis.engine:RedisEngine", "redis"),
    EngineEntry("rq+redis", "obsqueue.engines.rq.engine:RqEngine", "rq"),
    EngineEntry(
        "dramatiq+redis", "obsqueue.engines.dramatiq.redis_engine:DramatiqEngine", "dramatiq"
    ),
    EngineEntry(
        "dramatiq+amqp", "obsqueue.engines.dramatiq.amqp_engine:DramatiqAmqpEngine", "dramatiq"
    ),
    EngineEntry("huey+redis", "obsqueue.engines.huey.redis_engine:HueyRedisEngine", "huey"),
    EngineEntry("huey+sqlite", "obsqueue.engines.huey.sqlite_engine:HueySqliteEngine", "huey"),
    EngineEntry("bullmq+redis", "obsqueue.engines.bullmq.engine:BullmqEngine", "bullmq"),
    # programs over the process protocol; the Node ones need Node.js and `npm ci` in node/
    EngineEntry("exec+bullmq-node+redis", "obsqueue.engines.process.nodejs:BullMqNodeEngine"),
    EngineEntry("exec+bee-queue+redis", "obsqueue.engines.process.nodejs:BeeQueueEngine"),
    EngineEntry("exec+example", "obsqueue.engines.process.nodejs:ExampleNodeEngine"),
)


_RUNTIME: dict[str, EngineEntry] = {}


def register_engine(scheme: str, target: str) -> None:
    """Register ``scheme`` -> ``"module:Class"`` in this process (tests, notebooks, plugins that
    cannot ship an entry point). The conformance suite passes these on to its child processes."""
    if not scheme or "://" in scheme or ":" not in target:
        raise InvalidMessageError(
            "scheme", f"need a bare scheme and 'module:Class', got {scheme!r}"
        )
    _RUNTIME[scheme.lower()] = EngineEntry(scheme.lower(), target, None, "registered at runtime")


def runtime_registrations() -> dict[str, str]:
    """Schemes registered with ``register_engine`` in this process, as ``{scheme: target}``."""
    return {scheme: entry.target for scheme, entry in _RUNTIME.items()}


def registered_engines() -> dict[str, EngineEntry]:
    """Every scheme this installation knows: the built-ins, then runtime registrations and entry
    points (which may add schemes but never replace a built-in one)."""
    found = {entry.scheme: entry for entry in _BUILTIN}
    for scheme, entry in _RUNTIME.items():
        found.setdefault(scheme, entry)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, EngineEntry(ep.name, ep.value, None, f"entry point {ep.name}"))
    return found


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased; raises InvalidMessageError for a URL without one."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidMessageError(
            "url", f"must look like scheme://..., e.g. sqlite:///obs.db; got {url!r}"
        )
    return urlsplit(url).scheme.lower()


def engine_class(url_or_scheme: str) -> type[ObservationQueueEngine]:
    """Import and return the engine class for a URL (or a bare scheme)."""
    scheme = scheme_of(url_or_scheme) if "://" in url_or_scheme else url_or_scheme.lower()
    entries = registered_engines()
    entry = entries.get(scheme)
    if entry is None:
        known = ", ".join(f"{s}://" for s in sorted(entries))
        raise InvalidMessageError("url", f"unknown scheme {scheme}://; known: {known}")
    module_name, _, class_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'obsqueue[{entry.extra}]'" if entry.extra else f"install {module_name}"
        raise EngineUnavailableError(f"{scheme}:// needs: {hint} ({exc})") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ObservationQueueEngine)):
        raise EngineUnavailableError(f"{entry.target} is not an ObservationQueueEngine subclass")
    return cls


def open_engine(url: str, **options: Any) -> ObservationQueueEngine:
    """Open the engine a URL names, e.g. ``open_engine("sqlite:///obs.db", lease_s=30)``.

    Raises ``InvalidMessageError`` for an unknown scheme or bad option, and
    ``EngineUnavailableError`` when the driver is missing or the backend cannot be reached.
    """
    cls = engine_class(url)
    try:
        return cls(url, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise InvalidMessageError("options", f"{redact_url(url)}: {exc}") from None
