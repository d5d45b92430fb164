"""Run the conformance suite in fresh interpreters, as a user would, several at once.

Each run is one ``python -m pytest <the shipped suite>`` on some engine URLs, writing results
JSON to its own directory; :func:`run_all` runs them in a pool of ``workers`` processes (the
CI machine has 2 cores), longest first, and returns each run's results by engine label.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Environment variables that would point the suite at a shared server instead of a throwaway.
SERVER_ENV = ("OBSQUEUE_POSTGRES_URL", "OBSQUEUE_REDIS_URL", "OBSQUEUE_AMQP_URL")


@dataclass
class SuiteRun:
    """One pytest process: its engine URLs and extra arguments, and what it produced."""

    name: str
    urls: list[str]
    args: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    weight: float = 1.0  # expected duration, for scheduling the longest first
    returncode: int | None = None
    wall_s: float = 0.0
    log: Path | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log else ""


def _argv(run: SuiteRun, results: Path) -> list[str]:
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
        "no:cacheprovider",
        "-q",
        "-rfE",
        "--obsqueue-results",
        str(results),
        "--obsqueue-test-timeout",
        "90",
    ]
    for plugin in run.plugins:
        argv += ["-p", plugin]
    for url in run.urls:
        argv += ["--obsqueue-engine", url]
    return argv + run.args


def run_one(run: SuiteRun, directory: Path, timeout_s: float) -> SuiteRun:
    results = directory / run.name / "results"
    results.mkdir(parents=True, exist_ok=True)
    run.log = directory / run.name / "suite.log"
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV}
    started = time.monotonic()
    with run.log.open("w") as out:
        try:
            run.returncode = subprocess.run(
                _argv(run, results),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
                env=env,
            ).returncode
        except subprocess.TimeoutExpired:
            run.returncode = -1
    run.wall_s = time.monotonic() - started
    for path in sorted(results.glob("conformance-*.json")):
        doc = json.loads(path.read_text())
        run.results[doc["engine"]] = doc
    return run


def run_all(
    runs: list[SuiteRun], directory: Path, *, workers: int = 2, timeout_s: float = 900
) -> list[SuiteRun]:
    """Run every suite run, ``workers`` at a time, longest first; return them as given."""
    ordered = sorted(runs, key=lambda r: -r.weight)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda r: run_one(r, directory, timeout_s), ordered))
    return runs


def outcomes(doc: dict[str, Any]) -> dict[str, str]:
    return {p["id"]: p["outcome"] for p in doc["properties"]}


SHORT = {
    "pass": ".",
    "partial": "p",
    "fail": "F",
    "unsupported": "-",
    "expected-fail": "x",
    "unknown": "?",
}


def render(table: dict[str, dict[str, Any]], first: str = "engine") -> str:
    """A matrix of results documents: one row per engine, one column per property."""
    ids = [f"P{i}" for i in range(1, 17)]
    width = max([len(label) for label in table] + [len(first)]) + 2
    lines = [first.ljust(width) + " ".join(i.rjust(3) for i in ids)]
    for label, doc in table.items():
        cells = outcomes(doc)
        lines.append(label.ljust(width) + " ".join(SHORT[cells[i]].rjust(3) for i in ids))
    lines.append("(. pass, p partial, F fail, - unsupported, x expected-fail, ? unknown)")
    return "\n".join(lines)
