"""Servers in Docker containers (testcontainers), the third source where a Docker engine answers.

``container_server(kind, durability)`` starts the official image of PostgreSQL, Redis or RabbitMQ
with ``testcontainers`` (the ``testcontainers`` extra) and waits until the server inside answers
its own readiness probe (``pg_isready``, ``redis-cli ping``, ``rabbitmq-diagnostics ping``), not
only until Docker's port proxy accepts. The container's port is published on a free loopback port
chosen here, so that ``kill9()`` (``docker kill -s KILL``) and ``start()`` (``docker start``) bring
the same server back on the same URL and the same data: the handle is owned, like a throwaway
instance. ``stop()`` removes the container and its volumes.

The servers get the same durability profiles as the throwaway instances (``PG_PROFILES``,
``REDIS_PROFILES``; RabbitMQ has only ``durable``). ``docker_engine()`` says which Docker engine
answers, or raises ``ServerUnavailableError`` with the reason (no ``testcontainers`` package, or
no daemon behind the client).
"""

from __future__ import annotations

import gc
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from obsqueue.servers.base import (
    ServerHandle,
    ServerUnavailableError,
    free_port,
    started,
    wait_for_port,
)
from obsqueue.servers.postgres import PG_PROFILES
from obsqueue.servers.redis import REDIS_PROFILES

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

__all__ = ["IMAGES", "ContainerServer", "container_server", "docker_engine"]

#: The image each server kind runs in (official images, pinned to a major version).
IMAGES = {
    "postgres": "postgres:16-alpine",
    "redis": "redis:7-alpine",
    "rabbitmq": "rabbitmq:3-alpine",
}

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Recipe:
    """How one kind of server runs in its image: its port, command, probe and URL."""

    port: int
    url: str  # formatted with host, port, password
    ready: tuple[str, ...]
    command: Callable[[dict[str, str]], list[str]] | None = None
    env: Callable[[str], dict[str, str]] = lambda password: {}


def _postgres_command(settings: dict[str, str]) -> list[str]:
    return ["postgres", *(arg for k, v in settings.items() for arg in ("-c", f"{k}={v}"))]


def _redis_command(settings: dict[str, str]) -> list[str]:
    return ["redis-server", *(arg for k, v in settings.items() for arg in (f"--{k}", v))]


RECIPES = {
    "postgres": Recipe(
        5432,
        "postgresql://postgres@{host}:{port}/postgres",
        ("pg_isready", "-U", "postgres", "-h", "127.0.0.1"),
        _postgres_command,
        lambda password: {"POSTGRES_HOST_AUTH_METHOD": "trust"},
    ),
    "redis": Recipe(6379, "redis://{host}:{port}/0", ("redis-cli", "ping"), _redis_command),
    "rabbitmq": Recipe(
        5672,
        # RabbitMQ refuses its guest user over a non-loopback link, and Docker's port proxy is one
        "amqp://obsq:{password}@{host}:{port}/%2F",
        ("rabbitmq-diagnostics", "-q", "check_port_connectivity"),
        None,
        lambda password: {"RABBITMQ_DEFAULT_USER": "obsq", "RABBITMQ_DEFAULT_PASS": password},
    ),
}

PROFILES: dict[str, dict[str, dict[str, str]]] = {
    "postgres": PG_PROFILES,
    "redis": REDIS_PROFILES,
    "rabbitmq": {"durable": {}},
}


def docker_engine() -> str:
    """``"Docker <version>"`` of the engine the Docker client reaches, or
    ``ServerUnavailableError`` saying why there is none (asked once per process)."""
    version, problem = _ask_docker()
    if problem is not None:
        raise ServerUnavailableError(problem)
    return version


@cache
def _ask_docker() -> tuple[str, str | None]:
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError as exc:
        return (
            "",
            f"testcontainers is not installed ({exc}): pip install 'obsqueue[testcontainers]'",
        )
    with warnings.catch_warnings():
        # the docker package leaves the socket of a failed connect to the garbage collector
        warnings.simplefilter("ignore", ResourceWarning)
        answer = _docker_version(DockerClient)
        gc.collect()
    return answer


def _docker_version(client_class: Callable[[], Any]) -> tuple[str, str | None]:
    try:
        client = client_class().client
    except Exception as exc:  # the docker package raises DockerException, wrapping requests'
        return "", f"no Docker engine answers ({exc}); start one, or set DOCKER_HOST"
    try:
        return f"Docker {client.version().get('Version', '?')}", None
    except Exception as exc:
        return "", f"the Docker engine does not answer ({exc})"
    finally:
        client.close()


@dataclass
class ContainerServer(ServerHandle):
    """A server in a Docker container this process started; owned: kill -9 and restart work."""

    image: str = ""
    password: str = ""
    container: DockerContainer | None = None
    start_seconds: list[float] = field(default_factory=list)

    @property
    def recipe(self) -> Recipe:
        return RECIPES[self.kind]

    @property
    def url(self) -> str:
        return self.recipe.url.format(host=self.host, port=self.port, password=self.password)

    def start(self) -> None:
        """Create and start the container the first time; ``docker start`` it after a kill."""
        began = time.monotonic()
        if self.container is None:
            self.container = self._create()
            self.container.start()
        else:
            self.container.get_wrapped_container().start()
        self._wait_ready()
        self.start_seconds.append(time.monotonic() - began)

    def _create(self) -> DockerContainer:
        from testcontainers.core.container import DockerContainer

        recipe = self.recipe
        container = DockerContainer(self.image, env=recipe.env(self.password))
        if recipe.command is not None:
            container.with_command(recipe.command(self.settings))
        # published on loopback only: the server trusts every client that reaches it
        container.ports[f"{recipe.port}/tcp"] = (self.host, self.port)  # type: ignore[assignment]
        return container

    def _wait_ready(self) -> None:
        assert self.container is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.container.exec(list(self.recipe.ready)).exit_code == 0:
                wait_for_port(self.host, self.port, max(deadline - time.monotonic(), 1.0))
                return
            time.sleep(0.2)
        logs = b"".join(self.container.get_logs()).decode(errors="replace")[-2000:]
        raise ServerUnavailableError(
            f"{self.image} did not answer {' '.join(self.recipe.ready)} within "
            f"{READY_TIMEOUT_S:.0f} s\n{logs}"
        )

    def kill9(self) -> None:
        """SIGKILL the server: ``docker kill -s KILL`` on this handle's own container."""
        self._require_owned("kill -9")
        if self.container is not None:
            self.container.get_wrapped_container().kill(signal="SIGKILL")

    def stop(self) -> None:
        """Remove the container and its volumes."""
        if self.container is not None:
            self.container.stop()
            self.container = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "owned": self.owned,
            "source": "testcontainers",
            "image": self.image,
            "settings": dict(self.settings),
            "start_seconds": [round(s, 3) for s in self.start_seconds],
        }


def container_server(kind: str, durability: str = "durable") -> ContainerServer:
    """Start a ``kind`` server in a container on a free loopback port (see the module doc)."""
    profiles = PROFILES.get(kind)
    if profiles is None:
        raise ServerUnavailableError(f"obsqueue has no container image for {kind} servers")
    if durability not in profiles:
        raise ValueError(f"durability must be one of {sorted(profiles)}, got {durability!r}")
    docker_engine()
    server = ContainerServer(
        kind=kind,
        port=free_port(),
        settings=dict(profiles[durability]),
        image=IMAGES[kind],
        password=secrets.token_hex(8),
    )
    return started(server)
