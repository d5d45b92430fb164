"""What the suite writes for a selection, and for tests that fail before their engine opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.suite_runs import SuiteRun, run_one


@pytest.mark.integration
def test_a_k_selection_is_recorded_and_makes_the_results_partial(tmp_path: Path) -> None:
    run = run_one(
        SuiteRun("memory", ["memory://"], args=["-k", "test_close_is_idempotent"]), tmp_path, 300
    )
    doc = run.results["memory"]
    assert doc["complete"] is False
    assert doc["selection"]["keyword"] == "test_close_is_idempotent"
    outcomes = {p["id"]: p["outcome"] for p in doc["properties"]}
    assert outcomes["P16"] == "partial" and outcomes["P1"] == "unknown", outcomes
    left_out = [t for t in doc["tests"] if t["outcome"] == "not-selected"]
    assert left_out and all("-k test_close_is_idempotent" in t["reason"] for t in left_out)
    assert "selection: -k test_close_is_idempotent (results are partial)" in run.tail(20000)


@pytest.mark.integration
def test_a_test_that_errors_before_its_engine_opens_is_recorded(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    run = run_one(SuiteRun("down", [url], args=["-k", "test_close_is_idempotent"]), tmp_path, 300)
    doc = run.results["redis"]
    [test] = [t for t in doc["tests"] if t["outcome"] != "not-selected"]
    assert test["outcome"] == "fail" and "EngineUnavailableError" in test["reason"], test
    assert next(p for p in doc["properties"] if p["id"] == "P16")["outcome"] == "fail"


@pytest.mark.integration
def test_a_run_of_some_suite_files_or_tests_is_recorded_as_a_selection(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    from importlib import resources

    suite = resources.files("obsqueue.conformance").joinpath("suite")
    node = f"{suite.joinpath('test_many_sessions.py')}::TestManySessionsStop"
    argv = [sys.executable, "-m", "pytest", node, "-q", "-p", "no:cacheprovider"]
    argv += ["--obsqueue-engine", "memory://", "--obsqueue-results", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    doc = json.loads((tmp_path / "conformance-memory.json").read_text())
    assert doc["complete"] is False
    assert doc["selection"]["paths"] == [node]
    assert "test_order.py" in doc["selection"]["not_collected"]
    assert "(results are partial)" in done.stdout
