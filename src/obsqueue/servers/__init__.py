"""Servers for tests and benchmarks: "URL -> server -> engine URL" in one place.

``resolve_engine(url)`` (``resolve.py``) turns an engine URL as a user writes it into one that can
be opened, provisioning a server when the URL names none (``provision.py``: the environment's URL,
else a throwaway instance from the installed binaries). ``postgres.py``, ``redis.py`` and
``rabbitmq.py`` start and stop throwaway instances, each signalled only by its own pid.
"""

from obsqueue.servers.base import ServerHandle, ServerUnavailableError
from obsqueue.servers.provision import ENV_VARS, provision, throwaway_source
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
    "ResolvedEngine",
    "ServerHandle",
    "ServerUnavailableError",
    "engine_label",
    "needs_server",
    "provision",
    "resolve_engine",
    "split_server_durability",
    "throwaway_source",
    "with_server_url",
]
