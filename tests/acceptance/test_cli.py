"""The obsqueue CLI in a subprocess: help, engines, and a conformance run that writes JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from obsqueue.results import read_results


def obsqueue(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "obsqueue.cli", *args],
        cwd=cwd,
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


def test_unknown_scheme_is_a_clear_error(tmp_path: Path) -> None:
    out = obsqueue("conformance", "nope://", cwd=tmp_path)
    assert out.returncode != 0
    assert "nope://" in out.stdout + out.stderr


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


@pytest.mark.acceptance
def test_bench_drain_shows_progress_and_writes_results(tmp_path: Path) -> None:
    """`obsqueue bench drain sqlite://` reports progress on stderr and writes its JSON."""
    out = obsqueue(
        "bench", "drain", "sqlite://", "--messages", "300", "--results", "res", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "drained 300/300" in out.stderr
    assert "x the raw reference" in out.stderr
    doc = read_results(tmp_path / "res" / "bench-sqlite-drain.json", "benchmark")
    assert doc["workload"]["messages"] == 300
    assert doc["figures"]["drained_per_s"] > 0


def test_bench_refuses_a_bad_message_count(tmp_path: Path) -> None:
    out = obsqueue("bench", "drain", "memory://", "--messages", "0", cwd=tmp_path)
    assert out.returncode == 2
    assert "messages" in out.stderr
    assert not (tmp_path / "reports").exists()
