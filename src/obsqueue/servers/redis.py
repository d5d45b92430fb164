"""Throwaway ``redis-server`` instances, with the persistence each test asks for.

Profiles (``durability=``): ``"durable"`` = ``appendonly yes`` + ``appendfsync always`` (what the
native Redis engine calls its durable configuration); ``"everysec"`` = ``appendfsync everysec``;
``"none"`` = no AOF and no RDB snapshots (the machine's shared service runs so).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obsqueue.servers.base import (
    ServerHandle,
    ServerUnavailableError,
    free_port,
    started,
    wait_for_port,
    which_or_none,
)

__all__ = ["REDIS_PROFILES", "RedisServer", "throwaway_redis"]

REDIS_PROFILES: dict[str, dict[str, str]] = {
    "durable": {"appendonly": "yes", "appendfsync": "always", "save": ""},
    "everysec": {"appendonly": "yes", "appendfsync": "everysec", "save": ""},
    "none": {"appendonly": "no", "appendfsync": "no", "save": ""},
}


@dataclass
class RedisServer(ServerHandle):
    """A redis-server this process started (or, with ``owned=False``, one named by a URL)."""

    binary: str = "redis-server"
    external_url: str | None = None

    @property
    def url(self) -> str:
        if self.external_url is not None:
            return self.external_url
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self._require_owned("start")
        assert self.workdir is not None
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--logfile",
            str(self.workdir / "redis.log"),
            "--protected-mode",
            "no",
        ]
        for key, value in self.settings.items():
            args += [f"--{key}", value]
        with (self.workdir / "redis.stdout").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.host, self.port, 20, self.process)
        except ServerUnavailableError as exc:
            tail = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
            raise ServerUnavailableError(f"redis-server did not start: {exc}\n{tail}") from exc

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "redis",
            "owned": self.owned,
            "binary": self.binary,
            "settings": dict(self.settings),
        }


def find_binary() -> str:
    """The ``redis-server`` a throwaway instance runs, or ServerUnavailableError."""
    binary = which_or_none("redis-server", "/usr/bin", "/usr/local/bin")
    if binary is None:
        raise ServerUnavailableError(
            "redis-server is not installed: apt-get install redis-server, "
            "or set OBSQUEUE_REDIS_URL to a server you own"
        )
    return binary


def throwaway_redis(durability: str = "durable") -> RedisServer:
    """Start a redis-server on a free loopback port in a temporary directory."""
    if durability not in REDIS_PROFILES:
        raise ValueError(f"durability must be one of {sorted(REDIS_PROFILES)}, got {durability!r}")
    binary = find_binary()
    workdir = Path(tempfile.mkdtemp(prefix="obsq-redis-"))
    server = RedisServer(
        kind="redis",
        port=free_port(),
        workdir=workdir,
        settings=dict(REDIS_PROFILES[durability]),
        binary=binary,
    )
    return started(server)


def external_redis(url: str) -> RedisServer:
    """A handle on a Redis named by the environment: usable, never killed or restarted."""
    return RedisServer(kind="redis", owned=False, external_url=url)
