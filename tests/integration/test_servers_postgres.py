"""Throwaway PostgreSQL handles: start, kill -9, restart, stop — and whom they signal.

Raw SQL goes through psycopg directly (not the engine) so these tests check the server handle
alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from obsqueue.errors import EngineUnavailableError
from obsqueue.servers import ServerUnavailableError, provision
from obsqueue.servers import postgres as pgservers
from obsqueue.servers.postgres import PostgresServer, external_postgres, throwaway_postgres
from tests.conftest import throwaway

pytestmark = pytest.mark.integration


def _start(durability: str = "durable") -> PostgresServer:
    """A throwaway cluster; skipped on a laptop without PostgreSQL, a failure in CI."""
    return throwaway(lambda: throwaway_postgres(durability=durability), "PostgreSQL")


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    srv = _start()
    yield srv
    srv.stop()


def _sql(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def test_throwaway_is_durable_loopback_only_and_describes_itself(server: PostgresServer) -> None:
    settings = dict(
        _sql(
            server.url,
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit',"
            " 'full_page_writes', 'listen_addresses', 'unix_socket_directories')",
        )
    )
    assert settings == {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(server.workdir),
    }
    info = server.describe()
    assert info["durability"] == {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
    }
    (version,) = _sql(server.url, "SHOW server_version")[0]
    assert str(version).startswith(info["version"])
    assert info["start_seconds"][0] > 0
    assert server.url.startswith(f"postgresql://postgres@127.0.0.1:{server.port}/")


def test_kill9_signals_only_the_postmaster_and_restart_keeps_committed_data(
    server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sql(server.url, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1), (2)")
    idle = psycopg.connect(server.url, autocommit=True)  # a backend the kill will orphan
    backends = server.cluster_pids()
    assert backends, "a running cluster has backends and helper processes"
    postmaster = server.process.pid if server.process else None
    sent: list[tuple[int, int]] = []
    real_kill = os.kill

    def recording_kill(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", recording_kill)
    server.kill9()
    assert sent == [(postmaster, signal.SIGKILL)]
    # The orphaned backends notice their postmaster died and exit without being signalled
    deadline = time.monotonic() + 20
    while server.cluster_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.cluster_pids() == []
    server.start()
    assert sent == [(postmaster, signal.SIGKILL)]
    assert _sql(server.url, "SELECT x FROM kept ORDER BY x") == [(1,), (2,)]
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    idle.close()
    _sql(server.url, "DROP TABLE kept")


def test_restart_right_after_kill9_waits_for_a_backend_still_busy(server: PostgresServer) -> None:
    # A backend in a CPU-bound query only notices its postmaster's death when the query ends;
    # until then it holds the shared memory, and a new postmaster would refuse to start.
    def long_query() -> None:
        with (
            contextlib.suppress(psycopg.OperationalError),
            psycopg.connect(server.url, autocommit=True) as conn,
        ):
            conn.execute("SELECT count(*) FROM generate_series(1, 12000000)").fetchone()

    worker = threading.Thread(target=long_query)
    worker.start()
    time.sleep(0.3)
    old = server.cluster_pids()
    server.kill9()
    assert server.cluster_pids(), "the busy backend outlives its postmaster for a while"
    server.start()
    assert not set(old) & set(server.cluster_pids())
    assert _sql(server.url, "SELECT 1") == [(1,)]
    worker.join(timeout=30)
    assert not worker.is_alive()


def test_stop_removes_everything() -> None:
    srv = _start("async")
    assert _sql(srv.url, "SHOW synchronous_commit") == [("off",)]
    assert srv.describe()["durability"]["synchronous_commit"] == "off"
    workdir = srv.workdir
    assert workdir is not None and workdir.exists()
    srv.stop()
    assert not workdir.exists()
    assert srv.process is None
    with pytest.raises(psycopg.OperationalError):
        _sql(srv.url, "SELECT 1")


def test_a_port_taken_meanwhile_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    taken_port = taken.getsockname()[1]
    ports = iter([taken_port])
    real_free_port = pgservers.free_port
    monkeypatch.setattr(pgservers, "free_port", lambda: next(ports, None) or real_free_port())
    try:
        srv = _start()
    finally:
        taken.close()
    try:
        assert srv.port != taken_port
        assert srv.workdir is not None
        assert "could not bind" in (srv.workdir / "postgres.log").read_text()
        assert _sql(srv.url, "SELECT 1") == [(1,)]
    finally:
        srv.stop()


def test_external_handle_owns_nothing() -> None:
    handle = external_postgres("postgresql://user:s3cret@db.example:5432/app")
    assert handle.url == "postgresql://user:s3cret@db.example:5432/app"
    for act in (handle.kill9, handle.restart, handle.start):
        with pytest.raises(EngineUnavailableError, match="did not start"):
            act()
    handle.stop()  # a no-op
    assert provision("postgres", env_url=handle.url).owned is False


def test_root_without_a_postgres_user_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_such_user(name: str) -> object:
        raise KeyError(name)

    monkeypatch.setattr(pgservers.os, "geteuid", lambda: 0)
    monkeypatch.setattr(pgservers.pwd, "getpwnam", no_such_user)
    with pytest.raises(ServerUnavailableError, match="no 'postgres' system user") as info:
        throwaway_postgres()
    assert "initdb refuses to run as root" in str(info.value)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="durability"):
        throwaway_postgres(durability="fast")
