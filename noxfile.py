"""nox sessions: the same commands in CI and on a laptop.

nox -s conformance   the main job: the conformance suite on every engine, results JSON
nox -s tests         the project's own tests: unit, integration, acceptance, the mutants, and
                     the suite on every shipped engine checked against what each declares
nox -s lint          ruff (lint + format check) and mypy --strict on src/
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
DEV = ["ruff==0.17.6", "mypy==2.4.1", "types-redis"]

#: Every engine this project ships, from its one home (a URL without a host gets a throwaway
#: server); new engines are appended there, not here.
SHIPPED = Path(__file__).parent / "src" / "obsqueue" / "conformance" / "shipped_engines.toml"
ENGINES = [entry["url"] for entry in tomllib.loads(SHIPPED.read_text())["engine"]]


def install(session: nox.Session, *extra: str) -> None:
    """The package with every engine's driver, plus ``extra`` tools."""
    session.install("-e", ".[all]", *extra)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    install(session, *DEV)
    session.run("ruff", "check", "src", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py")
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Every tier; ``nox -s tests -- tests/unit`` runs one."""
    install(session)
    session.run("pytest", *(session.posargs or ["tests"]))


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """Run the suite on the given engine URLs (default: every engine) and write results."""
    install(session)
    session.run("obsqueue", "engines")
    session.run("obsqueue", "conformance", *(session.posargs or ENGINES))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The drain benchmark on the given engine URLs (default: every engine), beside raw loops."""
    install(session)
    session.run("obsqueue", "bench", "drain", *(session.posargs or ENGINES))
