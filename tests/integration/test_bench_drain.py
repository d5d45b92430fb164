"""The drain benchmark on real backends, beside its raw reference, through the CLI runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from obsqueue.benchmarks.drain import DrainWorkload
from obsqueue.benchmarks.runner import run_drain_benchmarks
from obsqueue.results import read_results
from obsqueue.servers import ServerUnavailableError
from obsqueue.servers.postgres import find_bindir
from tests.conftest import require_binary

pytestmark = pytest.mark.integration


def _bench(url: str, tmp_path: Path) -> dict[str, object]:
    lines: list[str] = []
    (path,) = run_drain_benchmarks(
        [url], DrainWorkload(messages=200), tmp_path, env_urls={}, progress=lines.append
    )
    assert any("drained 200/200" in line for line in lines), lines
    return read_results(path, "benchmark")


def test_sqlite_drain_writes_figures_reference_and_durability(tmp_path: Path) -> None:
    doc = _bench("sqlite://", tmp_path)
    assert doc["describe"]["durability"]["synchronous"] == "FULL"  # type: ignore[index]
    assert doc["reference"]["drained_per_s"] > 0  # type: ignore[index]
    assert doc["figures"]["drained_vs_reference"] > 0  # type: ignore[index]
    assert not list(tmp_path.glob("*.raw-reference*"))


def test_postgres_drain_runs_on_a_throwaway_server(tmp_path: Path) -> None:
    try:
        bindir: str | None = find_bindir()
    except ServerUnavailableError:
        bindir = None
    require_binary(bindir, "PostgreSQL server binaries")
    doc = _bench("postgresql://", tmp_path)
    assert doc["describe"]["durability"]["synchronous_commit"] == "on"  # type: ignore[index]
    assert doc["reference"]["name"].startswith("raw SKIP LOCKED")  # type: ignore[index]
    assert doc["server"]["owned"] is True  # type: ignore[index]


def test_redis_drain_runs_on_a_throwaway_server(tmp_path: Path) -> None:
    require_binary(shutil.which("redis-server"), "redis-server")
    doc = _bench("redis://", tmp_path)
    assert doc["describe"]["durability"]["appendfsync"] == "always"  # type: ignore[index]
    assert doc["reference"]["drained_per_s"] > 0  # type: ignore[index]
