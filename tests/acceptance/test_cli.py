"""The obsqueue CLI in a subprocess: help, engines and where their servers come from, a
conformance run that writes JSON, a benchmark. Bad URLs at the door: test_door.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from obsqueue.results import read_results
from obsqueue.servers import SOURCES, SOURCES_VAR
from tests.integration.helpers import docker_reason


def obsqueue(
    *args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "obsqueue.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_explains_urls_and_commands(tmp_path: Path) -> None:
    out = obsqueue("--help", cwd=tmp_path)
    assert out.returncode == 0
    for word in ("engines", "conformance", "sqlite:///", "OBSQUEUE_POSTGRES_URL"):
        assert word in out.stdout
    sub = obsqueue("conformance", "--help", cwd=tmp_path)
    assert "--results" in sub.stdout and "non-zero" in sub.stdout


def test_engines_lists_every_builtin(tmp_path: Path) -> None:
    out = obsqueue("engines", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for scheme in ("sqlite://", "memory://", "postgresql://", "redis://", "rq+redis://"):
        assert scheme in out.stdout


def engines_row(out: subprocess.CompletedProcess[str], scheme: str) -> str:
    assert out.returncode == 0, out.stderr
    return next(line for line in out.stdout.splitlines() if line.startswith(f"{scheme} "))


def test_engines_names_where_each_server_comes_from(tmp_path: Path) -> None:
    out = obsqueue("engines", cwd=tmp_path, env={"OBSQUEUE_REDIS_URL": "redis://u:pw@host:1/0"})
    redis = engines_row(out, "redis://")
    assert "yes" in redis and "redis from env: $OBSQUEUE_REDIS_URL" in redis
    assert "pw@" not in out.stdout, "the URL (and its password) is not printed"
    assert "embedded: no server needed" in engines_row(out, "sqlite://")
    postgres = engines_row(out, "postgresql://")
    assert any(f"postgres from {source}: " in postgres for source in SOURCES) or " no " in postgres


def test_engines_uses_testcontainers_where_docker_answers(tmp_path: Path) -> None:
    """With only the testcontainers source, a server engine is usable exactly where a Docker
    engine answers; elsewhere it is unusable and says why."""
    out = obsqueue("engines", cwd=tmp_path, env={SOURCES_VAR: "testcontainers"})
    row = engines_row(out, "rq+redis://")
    reason = docker_reason()
    if reason is None:
        assert "yes" in row and "redis from testcontainers: redis:7-alpine on Docker" in row
    else:
        assert " no " in row and f"no redis server: testcontainers: {reason}" in row


@pytest.mark.acceptance
def test_a_server_engine_without_a_server_is_unknown_with_the_reason(tmp_path: Path) -> None:
    """No source has a server (only testcontainers allowed, no Docker): each test of the engine
    is skipped as unknown with the reason, once for all of them, and the run does not crash."""
    if docker_reason() is None:
        pytest.skip("a Docker engine answers here: the run would get a container")
    out = obsqueue(
        "conformance", "redis://", "-q", "-k", "TestClose", "--results", "res",
        cwd=tmp_path, env={SOURCES_VAR: "testcontainers"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    reason = "unknown: no redis server: testcontainers: no Docker engine answers"
    summary = [line for line in out.stdout.splitlines() if line.startswith("SKIPPED")]
    assert summary and all(reason in line for line in summary), out.stdout[-3000:]
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.acceptance
def test_conformance_writes_results_and_prints_the_matrix(tmp_path: Path) -> None:
    """`obsqueue conformance memory:// sqlite://` passes, prints the matrix, writes JSON."""
    out = obsqueue(
        "conformance",
        "memory://",
        "sqlite://",
        "-q",
        "--results",
        str(tmp_path / "results"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "obsqueue conformance" in out.stdout
    for label in ("memory", "sqlite"):
        doc = read_results(tmp_path / "results" / f"conformance-{label}.json", "conformance")
        outcomes = {p["id"]: p["outcome"] for p in doc["properties"]}
        assert len(outcomes) == 16
        assert set(outcomes.values()) <= {"pass", "partial", "unsupported"}, json.dumps(outcomes)
        assert doc["environment"]["python"].startswith("3.")
    sqlite = read_results(tmp_path / "results" / "conformance-sqlite.json")
    assert sqlite["versions"]["durability"]["synchronous"]
    wakeup = next(p for p in sqlite["properties"] if p["id"] == "P9")
    assert any(k.endswith("wakeup_p99_s") for k in wakeup["timings"])
    assert not (tmp_path / "reports").exists() or (tmp_path / "results").exists()


DRAIN_300 = """
name = "drain300"
measure = "throughput"
messages_per_session = 300
rounds = 1
[arrival]
mode = "preload"
"""


@pytest.mark.acceptance
def test_bench_shows_progress_and_writes_results(tmp_path: Path) -> None:
    """`obsqueue bench --workload FILE sqlite://` reports on stderr and writes its JSON."""
    (tmp_path / "drain300.toml").write_text(DRAIN_300)
    out = obsqueue(
        "bench", "--workload", "drain300.toml", "sqlite://", "--results", "res", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "drained_per_s=" in out.stderr
    assert "x the ceiling" in out.stderr
    doc = read_results(tmp_path / "res" / "bench-sqlite-drain300.json", "benchmark")
    assert doc["workload_spec"]["messages_per_session"] == 300
    assert doc["summary"]["obsqueue"]["figures"]["drained_per_s"] > 0


def test_bench_refuses_a_bad_workload_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(DRAIN_300.replace("= 300", "= 0"))
    out = obsqueue("bench", "--workload", "bad.toml", "sqlite://", cwd=tmp_path)
    assert out.returncode == 2
    assert "bad.toml: messages_per_session: must be >= 1" in out.stderr
    assert not (tmp_path / "reports").exists()


def test_bench_points_the_old_positional_workload_to_the_option(tmp_path: Path) -> None:
    out = obsqueue("bench", "drain", "sqlite://", cwd=tmp_path)
    assert out.returncode == 2
    assert "--workload drain" in out.stderr
