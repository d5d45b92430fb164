"""Where a server of each kind comes from (docs/servers.md).

``find_source(kind)`` picks the first source that can give a server, in this order:

1. ``env`` — the URL the caller passes (read at the edge from ``OBSQUEUE_POSTGRES_URL`` /
   ``OBSQUEUE_REDIS_URL`` / ``OBSQUEUE_AMQP_URL``); never for tests that kill the server
   (``owned=True``), and never for a non-durable profile;
2. ``throwaway`` — an instance from the installed binaries on a free loopback port;
3. ``testcontainers`` — the official image in a Docker container, where a Docker engine answers;

else ``ServerUnavailableError`` names why each source could not serve. ``provision(kind)`` starts
(or, for ``env``, wraps) the server the chosen source gives. ``OBSQUEUE_SERVER_SOURCES`` (e.g.
``testcontainers`` or ``env,throwaway``) narrows the order; ``source_order`` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from obsqueue.errors import InvalidMessageError
from obsqueue.servers import containers, postgres, rabbitmq, redis
from obsqueue.servers.base import ServerHandle, ServerUnavailableError

__all__ = [
    "ENV_VARS",
    "SOURCES",
    "SOURCES_VAR",
    "ServerSource",
    "find_source",
    "provision",
    "source_order",
]

#: The environment variable that names an existing server of each kind (read by CLI and plugin).
ENV_VARS = {
    "postgres": "OBSQUEUE_POSTGRES_URL",
    "redis": "OBSQUEUE_REDIS_URL",
    "rabbitmq": "OBSQUEUE_AMQP_URL",
}

#: Every source, in the order they are tried.
SOURCES = ("env", "throwaway", "testcontainers")

#: Narrows ``SOURCES``: a comma-separated subset, tried in the order given.
SOURCES_VAR = "OBSQUEUE_SERVER_SOURCES"

#: Per kind: what a throwaway instance needs on this machine, how to start one, how to wrap an
#: external one; and the persistence profiles it can run with.
_THROWAWAY = {
    "postgres": (postgres.find_throwaway, postgres.throwaway_postgres, postgres.external_postgres),
    "redis": (redis.find_binary, redis.throwaway_redis, redis.external_redis),
    "rabbitmq": (rabbitmq.find_script, rabbitmq.throwaway_rabbitmq, rabbitmq.external_rabbitmq),
}

PROFILES = containers.PROFILES


@dataclass(frozen=True)
class ServerSource:
    """Where one server would come from: ``name`` is a ``SOURCES`` entry, ``detail`` says which
    (the variable, the binaries, the Docker engine and image)."""

    kind: str
    name: str
    detail: str
    env_url: str | None = None

    def start(self, durability: str = "durable") -> ServerHandle:
        """The server: wrapped when it comes from the environment, else started (owned)."""
        _, throwaway, external = _THROWAWAY[self.kind]
        if self.name == "env":
            assert self.env_url is not None
            handle: ServerHandle = external(self.env_url)
            return handle
        if self.name == "throwaway":
            started: ServerHandle = throwaway(durability=durability)
            return started
        return containers.container_server(self.kind, durability)

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


def source_order(env: Mapping[str, str]) -> tuple[str, ...]:
    """The sources to try, from ``OBSQUEUE_SERVER_SOURCES`` in ``env`` (default: all)."""
    given = env.get(SOURCES_VAR, "").strip()
    if not given:
        return SOURCES
    names = tuple(name.strip() for name in given.split(",") if name.strip())
    unknown = [name for name in names if name not in SOURCES]
    if unknown or not names:
        raise InvalidMessageError(
            SOURCES_VAR, f"{given!r}: use a comma-separated subset of {', '.join(SOURCES)}"
        )
    return names


def find_source(
    kind: str,
    *,
    env_url: str | None = None,
    owned: bool = False,
    order: tuple[str, ...] = SOURCES,
) -> ServerSource:
    """The first source in ``order`` that can give a ``kind`` server (see the module doc)."""
    if kind not in _THROWAWAY:
        raise ServerUnavailableError(f"obsqueue knows no way to get a {kind} server")
    reasons = []
    for name in order:
        if name == "env":
            if env_url and not owned:
                return ServerSource(kind, "env", f"${ENV_VARS[kind]}", env_url)
            reasons.append(
                "env: this run kills the server, so it needs one of its own"
                if env_url
                else f"env: ${ENV_VARS[kind]} is not set"
            )
            continue
        try:
            return ServerSource(kind, name, _probe(kind, name))
        except ServerUnavailableError as exc:
            reasons.append(f"{name}: {exc}")
    raise ServerUnavailableError("; ".join(reasons))


def _probe(kind: str, name: str) -> str:
    """What ``name`` would start a ``kind`` server from, without starting it; or
    ``ServerUnavailableError`` saying what is missing."""
    if name == "throwaway":
        return _THROWAWAY[kind][0]()
    return f"{containers.IMAGES[kind]} on {containers.docker_engine()}"


def provision(
    kind: str,
    *,
    env_url: str | None = None,
    owned: bool = False,
    durability: str = "durable",
    order: tuple[str, ...] = SOURCES,
) -> ServerHandle:
    """A server of ``kind`` for one test or benchmark; the caller stops it when done."""
    return find_source(kind, env_url=env_url, owned=owned, order=order).start(durability)
