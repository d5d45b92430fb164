"""Where a server of each kind comes from (docs/servers.md).

``provision(kind)`` gives a server in this order: the URL passed in (the caller read it from
``OBSQUEUE_POSTGRES_URL`` / ``OBSQUEUE_REDIS_URL`` / ``OBSQUEUE_AMQP_URL``); else a throwaway
instance from the installed binaries on a free loopback port; else ``ServerUnavailableError``
with the reason. Fault tests pass ``owned=True`` and always get a throwaway instance.
"""

from __future__ import annotations

import importlib

from obsqueue.servers.base import ServerHandle, ServerUnavailableError

__all__ = ["ENV_VARS", "ServerHandle", "ServerUnavailableError", "provision", "throwaway_source"]

#: The environment variable that names an existing server of each kind (read by CLI and plugin).
ENV_VARS = {
    "postgres": "OBSQUEUE_POSTGRES_URL",
    "redis": "OBSQUEUE_REDIS_URL",
    "rabbitmq": "OBSQUEUE_AMQP_URL",
}

_THROWAWAY = {
    "postgres": ("obsqueue.servers.postgres", "throwaway_postgres", "external_postgres"),
    "redis": ("obsqueue.servers.redis", "throwaway_redis", "external_redis"),
    "rabbitmq": ("obsqueue.servers.rabbitmq", "throwaway_rabbitmq", "external_rabbitmq"),
}


def throwaway_source(kind: str) -> str:
    """Where a throwaway server of ``kind`` would come from (its binaries), or
    ``ServerUnavailableError`` saying what is missing."""
    if kind == "postgres":
        from obsqueue.servers.postgres import find_bindir

        return find_bindir()
    if kind == "redis":
        from obsqueue.servers.redis import find_binary

        return find_binary()
    if kind == "rabbitmq":
        from obsqueue.servers.rabbitmq import find_script

        return find_script()
    raise ServerUnavailableError(f"obsqueue cannot start a throwaway {kind} server")


def provision(
    kind: str, *, env_url: str | None = None, owned: bool = False, durability: str = "durable"
) -> ServerHandle:
    """A server of ``kind`` for one test or benchmark; the caller stops it when done."""
    if kind not in _THROWAWAY:
        raise ServerUnavailableError(f"no provisioner for server kind {kind!r}")
    module_name, throwaway, external = _THROWAWAY[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ServerUnavailableError(f"{kind}: {module_name} cannot be imported ({exc})") from exc
    if env_url and not owned:
        handle: ServerHandle = getattr(module, external)(env_url)
        return handle
    started: ServerHandle = getattr(module, throwaway)(durability=durability)
    return started
