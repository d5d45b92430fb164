"""Throwaway RabbitMQ nodes: the installed ``rabbitmq-server`` in a temporary directory.

A ``RabbitmqServer`` runs RabbitMQ's own start script (``/usr/lib/rabbitmq/bin/rabbitmq-server``,
not the Debian wrapper ``/usr/sbin/rabbitmq-server``, which ``su``\\ s to the ``rabbitmq`` user
and writes to ``/var/log/rabbitmq``) with everything of its own:

* a unique node name ``obsq-<random>@localhost`` (never the machine's ``rabbit@<host>``);
* free loopback ports for AMQP (``RABBITMQ_NODE_PORT``) and Erlang distribution
  (``RABBITMQ_DIST_PORT``, bound to 127.0.0.1 with ``inet_dist_use_interface``);
* its own ``epmd`` on a free port (``ERL_EPMD_PORT``), started in the foreground by this handle
  and passed to the node with ``-start_epmd false``, so it never registers with the machine's
  shared epmd and no daemon is left behind;
* a temporary ``HOME`` (Erlang cookie), ``RABBITMQ_MNESIA_BASE``, ``RABBITMQ_LOG_BASE``, config
  file, an empty ``RABBITMQ_ENABLED_PLUGINS_FILE`` (no management plugin) and an empty
  ``RABBITMQ_CONF_ENV_FILE`` (so ``/etc/rabbitmq/rabbitmq-env.conf`` is not read).

It runs as the current user, root included: the inner script does not insist on the ``rabbitmq``
user (only the wrapper does). ``RABBITMQ_ALLOW_INPUT=1`` makes the script ``exec`` the VM, so the
``Popen`` pid *is* ``beam.smp`` (``-noinput`` is passed explicitly).

Signals: ``kill9()`` SIGKILLs that pid and every descendant of it (``erl_child_setup``,
``inet_gethost``, the disk monitor shell), found by walking ``/proc`` from the pid this handle
owns — nothing else. epmd keeps running across a kill -9, so ``start()`` brings the node back
on the same ports and data directory. ``stop()`` SIGTERMs the node (a clean shutdown), SIGKILLs
what is left, stops its epmd, and removes the directory.

Durability: queues and messages are durable only if the client declares and publishes them so
(the Dramatiq adapter does: durable queues, ``delivery_mode=2``, publisher confirms, which
RabbitMQ sends once a persistent message is fsynced). The node itself has no durability knob;
``durability=`` takes ``"durable"`` only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obsqueue.servers.base import (
    ServerHandle,
    ServerUnavailableError,
    free_port,
    kill_pid,
    started,
    terminate,
    wait_for_port,
    which_or_none,
)

__all__ = ["RabbitmqServer", "external_rabbitmq", "find_script", "throwaway_rabbitmq"]

SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin")
START_TIMEOUT_S = 90.0


@dataclass
class RabbitmqServer(ServerHandle):
    """A RabbitMQ node this process started (or, with ``owned=False``, one named by a URL)."""

    script: str = ""
    nodename: str = ""
    dist_port: int = 0
    epmd_port: int = 0
    external_url: str | None = None
    epmd: subprocess.Popen[bytes] | None = None
    start_seconds: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        if self.external_url is not None:
            return self.external_url
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._require_owned("start")
        assert self.workdir is not None
        started = time.monotonic()
        self._start_epmd()
        with (self.workdir / "rabbitmq.stdout").open("ab") as log:
            self.process = subprocess.Popen(
                [self.script],
                cwd=self.workdir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(START_TIMEOUT_S)
        except ServerUnavailableError as exc:
            tail = (self.workdir / "rabbitmq.stdout").read_text(errors="replace")[-2000:]
            self.kill9()
            raise ServerUnavailableError(f"rabbitmq-server did not start: {exc}\n{tail}") from exc
        self.start_seconds.append(time.monotonic() - started)

    def _start_epmd(self) -> None:
        if self.epmd is not None and self.epmd.poll() is None:
            return
        assert self.workdir is not None
        epmd = which_or_none("epmd", "/usr/bin", "/usr/lib/erlang/bin") or "epmd"
        with (self.workdir / "epmd.log").open("ab") as log:
            self.epmd = subprocess.Popen(
                [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port("127.0.0.1", self.epmd_port, 10, self.epmd)

    def _env(self) -> dict[str, str]:
        assert self.workdir is not None
        w = self.workdir
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        return {
            **keep,
            "HOME": str(w / "home"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(w / "mnesia"),
            "RABBITMQ_LOG_BASE": str(w / "log"),
            "RABBITMQ_CONFIG_FILE": str(w / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(w / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
            "RABBITMQ_ALLOW_INPUT": "1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-noinput -start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            ),
        }

    def _wait_ready(self, timeout_s: float) -> None:
        """Wait until an AMQP connection with pika succeeds (bounded)."""
        import pika
        import pika.exceptions

        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        wait_for_port(self.host, self.port, timeout_s, self.process)
        params = pika.URLParameters(self.url + "?socket_timeout=2&connection_attempts=1")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailableError(f"exited with code {self.process.returncode}")
            try:
                pika.BlockingConnection(params).close()
                return
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.1)
        raise ServerUnavailableError(f"no AMQP connection on {self.host}:{self.port}")

    def node_pids(self) -> list[int]:
        """The node's pid (``beam.smp``) and all its descendants, from ``/proc``."""
        if self.process is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def kill9(self) -> None:
        """SIGKILL the node this handle started and its descendants, by pid."""
        self._require_owned("kill -9")
        if self.process is None:
            return
        for pid in self.node_pids():
            kill_pid(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """Clean shutdown (SIGTERM), SIGKILL if that hangs; stop epmd; remove the directory."""
        if not self.owned:
            return
        if self.process is not None:
            pids = self.node_pids()
            kill_pid(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
            for pid in pids:
                kill_pid(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            self.process = None
        if self.epmd is not None:
            terminate(self.epmd, signal.SIGTERM, timeout_s=10)
            self.epmd = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---------------------------------------------------------------------------- describe

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "rabbitmq",
            "owned": self.owned,
            "version": _version(self.script) if self.script else None,
            "script": self.script or None,
            "nodename": self.nodename or None,
            "durability": {"queues": "client-declared durable", "fsync": "on publisher confirm"},
            "start_seconds": [round(s, 3) for s in self.start_seconds],
        }


# ---------------------------------------------------------------------------- module API


def find_script() -> str:
    """RabbitMQ's own ``rabbitmq-server`` start script, or ServerUnavailableError."""
    for directory in SCRIPT_DIRS:
        candidate = Path(directory) / "rabbitmq-server"
        if candidate.exists() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ServerUnavailableError(
        "RabbitMQ is not installed (no /usr/lib/rabbitmq/bin/rabbitmq-server): apt-get install "
        "rabbitmq-server, or set OBSQUEUE_AMQP_URL to a server you own"
    )


def throwaway_rabbitmq(durability: str = "durable") -> RabbitmqServer:
    """Start a RabbitMQ node with its own epmd on free loopback ports in a temporary dir."""
    if durability != "durable":
        raise ValueError(f"durability must be 'durable' for rabbitmq, got {durability!r}")
    script = find_script()
    workdir = Path(tempfile.mkdtemp(prefix="obsq-rmq-"))
    port = free_port()
    server = RabbitmqServer(
        kind="rabbitmq",
        port=port,
        workdir=workdir,
        settings={"durability": durability},
        script=script,
        nodename=f"obsq-{secrets.token_hex(6)}@localhost",
        dist_port=free_port(),
        epmd_port=free_port(),
    )
    for sub in ("home", "mnesia", "log"):
        (workdir / sub).mkdir()
    (workdir / "enabled_plugins").write_text("")
    (workdir / "rabbitmq-env.conf").write_text("")
    (workdir / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\n"
        "disk_free_limit.absolute = 50MB\n"
        "log.file.level = warning\n"
    )
    return started(server)


def external_rabbitmq(url: str) -> RabbitmqServer:
    """A handle on a RabbitMQ named by the environment: usable, never killed or restarted."""
    return RabbitmqServer(kind="rabbitmq", owned=False, external_url=url)


def _version(script: str) -> str | None:
    """The version in the installed path (``.../rabbitmq_server-3.10.8/sbin``)."""
    real = Path(script).resolve()
    for part in real.parts:
        if part.startswith("rabbitmq_server-"):
            return part.removeprefix("rabbitmq_server-")
    return None
