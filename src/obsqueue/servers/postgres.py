"""Throwaway PostgreSQL clusters: ``initdb`` + ``postgres`` in a temporary directory.

A ``PostgresServer`` runs the installed server binaries (found with ``pg_config --bindir``, else
the newest ``/usr/lib/postgresql/<version>/bin``) on a free loopback port, with its unix socket in
its own temporary directory, trust authentication for user ``postgres`` and database
``postgres``. ``initdb`` runs with ``--no-sync``: its files reach the page cache, which a kill -9
of the server does not lose; from then on the server itself fsyncs as configured.

Profiles (``durability=``): ``"durable"`` = ``fsync=on`` + ``synchronous_commit=on`` +
``full_page_writes=on`` (the Postgres engine's durable configuration: a commit that returned is on
disk); ``"async"`` = the same with ``synchronous_commit=off`` (commits return before the WAL
flush; a server crash may lose the last ~0.6 s of them; for benchmarks).

``initdb`` refuses to run as root. When this process is root (as in CI), both ``initdb`` and
``postgres`` run as the ``postgres`` system user (``Popen(user=, group=)``) in a directory chowned
to it; without that user, ``ServerUnavailableError`` says what is missing.

Signals: ``kill9()`` sends SIGKILL to the postmaster this handle started, by pid, and nothing
else. Its backends notice the postmaster's death and exit by themselves; ``start()`` waits for
every process still running in this cluster's data directory (found by their working directory,
which every PostgreSQL process sets to its data directory) before it starts the postmaster again,
because PostgreSQL refuses to start while old backends hold the shared memory. Only if they
outlive that wait are they killed — they are this handle's own cluster. ``stop()`` uses SIGINT
(fast shutdown: clients are disconnected), then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from glob import glob
from pathlib import Path
from typing import Any, ClassVar

from obsqueue.servers.base import (
    ServerHandle,
    ServerUnavailableError,
    free_port,
    kill_pid,
)

__all__ = [
    "PG_PROFILES",
    "PostgresServer",
    "RunAs",
    "external_postgres",
    "find_bindir",
    "find_throwaway",
    "throwaway_postgres",
]

PG_PROFILES: dict[str, dict[str, str]] = {
    "durable": {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"},
    "async": {"fsync": "on", "synchronous_commit": "off", "full_page_writes": "on"},
}

#: Settings every throwaway cluster gets, besides its profile.
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}

START_TIMEOUT_S = 60.0
ORPHAN_WAIT_S = 20.0


@dataclass(frozen=True)
class RunAs:
    """The system user the server runs as when this process is root."""

    name: str
    uid: int
    gid: int


@dataclass
class PostgresServer(ServerHandle):
    """A postmaster this process started (or, with ``owned=False``, one named by a URL)."""

    bindir: str = ""
    run_as: RunAs | None = None
    external_url: str | None = None
    start_seconds: list[float] = field(default_factory=list)
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT  # a fast shutdown

    @property
    def url(self) -> str:
        if self.external_url is not None:
            return self.external_url
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def datadir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "data"

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._require_owned("start")
        assert self.workdir is not None
        started = time.monotonic()
        self._wait_for_old_cluster_processes()
        args = [str(Path(self.bindir) / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        settings = {**BASE_SETTINGS, **self.settings, "unix_socket_directories": str(self.workdir)}
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with (self.workdir / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                **_as_user(self.run_as),
            )
        try:
            self._wait_ready(START_TIMEOUT_S)
        except ServerUnavailableError as exc:
            tail = (self.workdir / "postgres.log").read_text(errors="replace")[-2000:]
            raise ServerUnavailableError(f"postgres did not start: {exc}\n{tail}") from exc
        self.start_seconds.append(time.monotonic() - started)

    def _wait_ready(self, timeout_s: float) -> None:
        """Wait until ``postmaster.pid`` names our process and says ``ready`` (pg_ctl's test)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        pidfile = self.datadir / "postmaster.pid"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailableError(f"postgres exited with code {self.process.returncode}")
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                ours = len(lines) >= 8 and lines[0] == str(self.process.pid)
                if ours and lines[7].strip() == "ready":
                    return
            time.sleep(0.02)
        raise ServerUnavailableError(
            f"not ready on {self.host}:{self.port} within {timeout_s:.0f} s"
        )

    def _before_remove(self) -> None:
        """``stop`` is a fast shutdown (SIGINT); the cluster's processes go before its files."""
        with contextlib.suppress(ServerUnavailableError):
            self._wait_for_old_cluster_processes()

    # ------------------------------------------------------------- leftovers of a kill -9

    def cluster_pids(self) -> list[int]:
        """Processes still running in this cluster's data directory (the postmaster's backends
        and helpers keep it as their working directory), the live postmaster excluded."""
        target = str(self.datadir)
        mine = self.process.pid if self.process is not None else None
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == mine:
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd") == target:
                    found.append(int(entry.name))
        return sorted(found)

    def _wait_for_old_cluster_processes(self) -> None:
        """Backends orphaned by a kill -9 exit on their own once they notice; wait for them.
        Only if they outlive ``ORPHAN_WAIT_S`` are they killed (they are this cluster's)."""
        if self.process is not None and self.process.poll() is None:
            return
        if _wait_until(lambda: not self.cluster_pids(), ORPHAN_WAIT_S):
            return
        for pid in self.cluster_pids():
            kill_pid(pid, signal.SIGKILL)
        if not _wait_until(lambda: not self.cluster_pids(), 10.0):
            raise ServerUnavailableError(
                f"old processes of {self.datadir} still run: {self.cluster_pids()}"
            )

    # ---------------------------------------------------------------------------- describe

    def describe(self) -> dict[str, Any]:
        version = _server_version(self.bindir) if self.bindir else None
        return {
            "kind": "postgres",
            "owned": self.owned,
            "version": version,
            "bindir": self.bindir or None,
            "run_as": self.run_as.name if self.run_as else None,
            "durability": {
                key: self.settings.get(key)
                for key in ("fsync", "synchronous_commit", "full_page_writes")
            },
            "start_seconds": [round(s, 3) for s in self.start_seconds],
        }


# ---------------------------------------------------------------------------- module API


def throwaway_postgres(durability: str = "durable") -> PostgresServer:
    """``initdb`` a cluster in a temporary directory and start it on a free loopback port."""
    if durability not in PG_PROFILES:
        raise ValueError(f"durability must be one of {sorted(PG_PROFILES)}, got {durability!r}")
    bindir = find_bindir()
    run_as = _run_as()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="obsq-pg-"))
    server = PostgresServer(
        kind="postgres",
        port=free_port(),
        workdir=workdir,
        settings=dict(PG_PROFILES[durability]),
        bindir=bindir,
        run_as=run_as,
    )
    try:
        if run_as is not None:
            os.chown(workdir, run_as.uid, run_as.gid)
        _initdb(bindir, server.datadir, run_as)
        _start_on_a_free_port(server)
    except BaseException:
        server.stop()
        raise
    server.start_seconds[0] = time.monotonic() - started  # the first start includes initdb
    return server


def _start_on_a_free_port(server: PostgresServer, attempts: int = 3) -> None:
    """Start; if another process took the port between ``free_port()`` and the bind, try
    another port (the machine may be shared by several test runs)."""
    for attempt in range(attempts):
        try:
            server.start()
            return
        except ServerUnavailableError as exc:
            if "could not bind" not in str(exc) or attempt == attempts - 1:
                raise
            server.port = free_port()


def external_postgres(url: str) -> PostgresServer:
    """A handle on a PostgreSQL named by the environment: usable, never killed or restarted."""
    return PostgresServer(kind="postgres", owned=False, external_url=url)


def find_throwaway() -> str:
    """What a throwaway cluster would run: the binaries, and the system user when this process
    is root; or ServerUnavailableError saying what is missing."""
    bindir = find_bindir()
    run_as = _run_as()
    return bindir if run_as is None else f"{bindir} (as the {run_as.name} user)"


def find_bindir() -> str:
    """The directory holding ``initdb`` and ``postgres``, or ServerUnavailableError."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(out.stdout.strip())
    candidates += sorted(glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += [str(Path(p).parent) for p in filter(None, [shutil.which("initdb")])]
    for directory in candidates:
        if all(os.access(Path(directory) / name, os.X_OK) for name in ("initdb", "postgres")):
            return directory
    raise ServerUnavailableError(
        "PostgreSQL server binaries (initdb, postgres) are not installed: "
        "apt-get install postgresql, or set OBSQUEUE_POSTGRES_URL to a server you own"
    )


# ------------------------------------------------------------------------------- helpers


def _version_key(path: str) -> tuple[int, ...]:
    name = Path(path).parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit()) or (0,)


def _run_as() -> RunAs | None:
    """None when not root; else the ``postgres`` system user (initdb refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailableError(
            "running as root, and initdb refuses to run as root; there is no 'postgres' system "
            "user to run the throwaway server as: create it (useradd --system postgres), run "
            "as a non-root user, or set OBSQUEUE_POSTGRES_URL"
        ) from None
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _as_user(run_as: RunAs | None) -> dict[str, Any]:
    if run_as is None:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


def _child_env() -> dict[str, str]:
    """This environment without PG* variables (they would steer the server), in the C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


def _initdb(bindir: str, datadir: Path, run_as: RunAs | None) -> None:
    args = [
        str(Path(bindir) / "initdb"),
        "-D",
        str(datadir),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]
    done = subprocess.run(
        args,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=_child_env(),
        **_as_user(run_as),
    )
    if done.returncode != 0:
        raise ServerUnavailableError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")


@cache
def _server_version(bindir: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [str(Path(bindir) / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        found = re.search(r"\(PostgreSQL\)\s+(\S+)", out.stdout)
        return found.group(1) if found else out.stdout.strip() or None
    return None


def _wait_until(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
