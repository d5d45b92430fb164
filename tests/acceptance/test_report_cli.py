"""``obsqueue report`` and ``obsqueue scorecard`` run as a user runs them, in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "obsqueue.cli"]


def obsqueue(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_report_names_bad_files_and_still_writes_the_scorecard(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "reports" / "results", results)
    (results / "conformance-corrupt.json").write_text('{"schema_version": 1, "kind": "confo')
    (results / "bench-future-drain.json").write_text(
        json.dumps({"schema_version": 7, "kind": "benchmark", "engine": "x", "workload": "drain"})
    )
    done = obsqueue("report", "--results", str(results), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "gap: conformance-corrupt.json: not readable JSON" in done.stderr
    assert "gap: bench-future-drain.json: benchmark schema_version 7" in done.stderr
    assert "redis-none" in done.stdout and "xfail" in done.stdout  # the terminal matrix
    for name in ("scorecard.md", "scorecard.html", "charts/throughput-sessions.png"):
        assert (tmp_path / "out" / name).is_file(), name


def test_report_without_results_says_what_to_run(tmp_path: Path) -> None:
    done = obsqueue("report", "--results", str(tmp_path / "none"), "--out", str(tmp_path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "no results directory" in done.stderr and "obsqueue scorecard" in done.stderr


def test_scorecard_runs_end_to_end_on_the_memory_engine(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "out"
    done = obsqueue(
        "scorecard", "memory://", "--results", str(results), "--out", str(out), timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "memory" in done.stdout and f"scorecard: {out / 'scorecard.html'}" in done.stdout
    run = json.loads((results / "scorecard-run.json").read_text())
    steps = {t["step"]: t for t in run["tasks"]}
    assert steps["probes"]["status"] == "ok" and steps["conformance"]["status"] == "ok"
    assert steps["conformance"]["tests"] > 50
    bench = steps["bench"]
    assert bench["status"] == "ok" or (
        bench["status"] == "not measured" and "--profile" in bench["reason"]
    )
    privacy = json.loads((results / "privacy-memory.json").read_text())
    assert privacy["status"] == "ok" and privacy["plain_text"] is None
    md = (out / "scorecard.md").read_text()
    assert "no storage files (kept in process memory)" in md
    assert "memory:// bench: not measured — " in md or bench["status"] == "ok"


def test_scorecard_refuses_an_unknown_engine_before_running_anything(tmp_path: Path) -> None:
    done = obsqueue("scorecard", "nosuch://x", "sqlite://", "--results", str(tmp_path / "r"))
    assert done.returncode == 2
    assert "nosuch://x" in done.stderr and "known:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()
