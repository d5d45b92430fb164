"""Proof that the suite has teeth: every deliberately broken engine fails the property it
breaks, and the correct reference engines pass every property they declare."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tests.mutants.register import all_mutants, scheme_for

ROOT = Path(__file__).resolve().parents[2]
CORRECT = ["memory://", "sqlite://"]


def run_suite(urls: list[str], results: Path, log: Path) -> int:
    """Run the conformance suite in a fresh interpreter, as a user would, on ``urls``."""
    package = resources.files("obsqueue.conformance")
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(package.joinpath("suite")),
        "-c",
        str(package.joinpath("pytest.ini")),
        "--rootdir",
        str(ROOT),
        "-p",
        "tests.mutants.register",
        "-p",
        "no:cacheprovider",
        "-q",
        "--obsqueue-results",
        str(results),
        "--obsqueue-test-timeout",
        "60",
        "--durations=20",
    ]
    for url in urls:
        argv += ["--obsqueue-engine", url]
    with log.open("w") as out:
        return subprocess.run(
            argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=1500, check=False
        ).returncode


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One suite run over every mutant and the correct engines: label -> property -> result."""
    tmp = tmp_path_factory.mktemp("mutants")
    urls = [*CORRECT, *[f"{scheme_for(cls)}://" for cls in all_mutants()]]
    code = run_suite(urls, tmp / "results", tmp / "suite.log")
    assert code in (0, 1), (tmp / "suite.log").read_text()[-5000:]
    table: dict[str, dict[str, Any]] = {}
    for path in sorted((tmp / "results").glob("conformance-*.json")):
        doc = json.loads(path.read_text())
        table[doc["engine"]] = {p["id"]: p for p in doc["properties"]}
    print(_render(table))
    return table


def _render(table: dict[str, dict[str, Any]]) -> str:
    ids = [f"P{i}" for i in range(1, 17)]
    short = {"pass": ".", "fail": "F", "unsupported": "-", "expected-fail": "x", "unknown": "?"}
    lines = ["mutant".ljust(28) + " ".join(i.rjust(3) for i in ids)]
    for label, props in table.items():
        lines.append(label.ljust(28) + " ".join(short[props[i]["outcome"]].rjust(3) for i in ids))
    return "\n".join(lines)


@pytest.mark.integration
@pytest.mark.parametrize("mutant", all_mutants(), ids=scheme_for)
def test_mutant_fails_the_property_it_breaks(
    matrix: dict[str, dict[str, Any]], mutant: type
) -> None:
    label = scheme_for(mutant)
    broken = mutant.BREAKS  # type: ignore[attr-defined]
    assert label in matrix, f"no results for {label}"
    result = matrix[label][broken]
    assert result["outcome"] == "fail", f"{label} was not caught on {broken}: {result}"


@pytest.mark.integration
@pytest.mark.parametrize("label", ["memory", "sqlite"])
def test_correct_engines_pass_what_they_declare(
    matrix: dict[str, dict[str, Any]], label: str
) -> None:
    outcomes = {pid: r["outcome"] for pid, r in matrix[label].items()}
    bad = {
        pid: matrix[label][pid]["reason"]
        for pid, o in outcomes.items()
        if o not in ("pass", "unsupported")
    }
    assert not bad, bad
