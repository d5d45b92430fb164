"""nox sessions: the same commands in CI and on a laptop.

nox -s scorecard     the main job: probes, conformance, quick benchmarks, then reports/scorecard.*
nox -s conformance   the conformance suite on every engine, results JSON
nox -s tests         the project's own tests: unit, integration, acceptance, the mutants, and
                     the suite on every shipped engine checked against what each declares
nox -s lint          ruff (lint + format check), mypy --strict on src/, and the layering
                     (import-linter contracts in pyproject.toml, docs/design.md)
nox -s microbench    per-operation costs (pytest-benchmark) of each engine, results JSON
nox -s bench         quick `sessions` on every engine + the harness self-checks
nox -s bench-full    every workload at the full profile, the durability sweep, the self-checks
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
DEV = [
    "ruff==0.17.6",
    "mypy==2.4.1",
    "types-redis",
    "types-jsonschema",
    "types-psutil",
    "import-linter==2.17",
]

#: Every engine this project ships, from its one home (a URL without a host gets a throwaway
#: server); new engines are appended there, not here.
SHIPPED = Path(__file__).parent / "src" / "obsqueue" / "conformance" / "shipped_engines.toml"
ENGINES = [entry["url"] for entry in tomllib.loads(SHIPPED.read_text())["engine"]]

#: The shipped engines in node/ (``exec+…``, over the process protocol, docs/process-protocol.md)
#: need Node.js.
NODE_ENGINES = [url for url in ENGINES if url.startswith("exec+")]
NODE_DIR = Path(__file__).parent / "node"


#: BullMQ's Python package and its runtime needs, installed without its exact pins: bullmq 3.x pins
#: croniter==2.0.7, pgqueuer (a benchmark peer) needs croniter>=5, and obsqueue uses no BullMQ
#: feature that touches croniter (repeatable jobs). A user who installs only `obsqueue[bullmq]`
#: gets bullmq with its own pins.
BULLMQ_NO_PINS = ["bullmq>=3.4,<4", "msgpack>=1.0", "semver>=3.0"]


def install(session: nox.Session, *extra: str) -> None:
    """The package with every engine's driver, plus ``extra`` tools; and, where Node.js is
    present, the Node engines' libraries (``npm ci`` in node/, from its lock file)."""
    session.install("-e", ".[all]", *extra)
    session.install("--no-deps", *BULLMQ_NO_PINS)
    if shutil.which("npm") is None:
        session.warn("Node.js/npm not found: the Node engines in node/ are unavailable here")
        return
    with session.chdir(NODE_DIR):
        session.run("npm", "ci", "--no-audit", "--no-fund", external=True, silent=True)


def engines() -> list[str]:
    """Every engine to run by default: the Python ones, and the Node ones where Node.js is."""
    if shutil.which("node"):
        return ENGINES
    return [url for url in ENGINES if url not in NODE_ENGINES]


CHROMIUM = "/usr/bin/chromium"


def ensure_chromium(session: nox.Session) -> None:
    """Debian's chromium for the scorecard's browser check (Playwright never downloads one)."""
    if os.path.exists(CHROMIUM):
        return
    if shutil.which("apt-get") is None:
        session.warn(f"{CHROMIUM} is missing and there is no apt-get: the browser check will skip")
        return
    session.run("apt-get", "update", "-q", external=True)
    session.run(
        "apt-get",
        "install",
        "-y",
        "-q",
        "chromium",
        external=True,
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    install(session, *DEV)
    session.run("ruff", "check", "src", "tests", "microbench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "microbench", "noxfile.py")
    session.run("mypy")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Every tier; ``nox -s tests -- tests/unit`` runs one."""
    install(session)
    ensure_chromium(session)
    session.run("pytest", *(session.posargs or ["tests"]))


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """Run the suite on the given engine URLs (default: every engine) and write results."""
    install(session)
    session.run("obsqueue", "engines")
    session.run("obsqueue", "conformance", *(session.posargs or engines()))


#: ``nox -s bench``: the quick profile of these workloads, on every engine, in < 10 minutes.
QUICK_WORKLOADS = ["sessions"]
#: ``nox -s bench-full``: every shipped workload at the full profile.
FULL_WORKLOADS = [
    "sessions",
    "drain",
    "latency",
    "idle",
    "recovery",
    "scaling",
    "one-session",
    "twenty-sessions",
    "trickle",
]
#: The durability sweep's engines: one per backend with durability settings.
SWEEP_ENGINES = ["sqlite://", "postgresql://", "redis://"]


def _workloads(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--workload", name)]


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Quick benchmarks on the given engine URLs (default: every engine), then the self-checks."""
    install(session)
    urls = session.posargs or engines()
    session.run("obsqueue", "bench", *_workloads(QUICK_WORKLOADS), "--self-check", *urls)


@nox.session(name="bench-full", python=PYTHON)
def bench_full(session: nox.Session) -> None:
    """Every workload at the full profile, the durability sweep and the self-checks."""
    install(session)
    urls = session.posargs or engines()
    full = ["--profile", "full"]
    session.run("obsqueue", "bench", *full, *_workloads(FULL_WORKLOADS), "--self-check", *urls)
    sweep = session.posargs or SWEEP_ENGINES
    session.run("obsqueue", "bench", *full, "--durability-sweep", "--workload", "sessions", *sweep)


@nox.session(python=PYTHON)
def scorecard(session: nox.Session) -> None:
    """The main job: every engine (or the given URLs) through the probes, the suite and the quick
    benchmarks, then reports/scorecard.md, reports/scorecard.html and reports/charts/."""
    install(session)
    session.run("obsqueue", "scorecard", *session.posargs)


@nox.session(python=PYTHON)
def report(session: nox.Session) -> None:
    """Only the report, from the results already in reports/results/."""
    install(session)
    session.run("obsqueue", "report", *session.posargs)


@nox.session(python=PYTHON)
def microbench(session: nox.Session) -> None:
    """Per-operation costs (enqueue, claim + ack, get_pending_count) of the given engine URLs
    (default: every engine), one pytest-benchmark run each, written to
    ``reports/results/microbench-<engine>.json``."""
    install(session)
    for url in session.posargs or ENGINES:
        session.run(
            "pytest",
            "microbench",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--microbench-engine={url}",
            "--microbench-results=reports/results",
        )
