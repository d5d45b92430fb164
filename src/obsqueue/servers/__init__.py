"""Servers for tests and benchmarks: "URL -> server -> engine URL" in one place.

``resolve_engine(url)`` (``resolve.py``) turns an engine URL as a user writes it into one that can
be opened, provisioning a server when the URL names none. ``provision.py`` picks where that server
comes from: the environment's URL, else a throwaway instance from the installed binaries
(``postgres.py``, ``redis.py``, ``rabbitmq.py``, each signalling only its own pids), else a
container where a Docker engine answers (``containers.py``, testcontainers), else the engine is
*unavailable* with the reason. ``door.py`` refuses bad engine URLs before a run starts.
See docs/servers.md.
"""

from obsqueue.servers.base import ServerHandle, ServerUnavailableError
from obsqueue.servers.provision import (
    ENV_VARS,
    SOURCES,
    SOURCES_VAR,
    ServerSource,
    find_source,
    provision,
    source_order,
)
from obsqueue.servers.resolve import (
    ResolvedEngine,
    engine_label,
    needs_server,
    resolve_engine,
    split_server_durability,
    with_server_url,
)

__all__ = [
    "ENV_VARS",
    "SOURCES",
    "SOURCES_VAR",
    "ResolvedEngine",
    "ServerHandle",
    "ServerSource",
    "ServerUnavailableError",
    "engine_label",
    "find_source",
    "needs_server",
    "provision",
    "resolve_engine",
    "source_order",
    "split_server_durability",
    "with_server_url",
]
