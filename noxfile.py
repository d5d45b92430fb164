"""nox sessions: the same commands in CI and on a laptop.

nox -s conformance   the main job: the conformance suite on every engine, results JSON
nox -s tests         lint, then the project's own tests (unit, integration, acceptance)
nox -s lint          ruff (lint + format check) and mypy --strict on src/
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
DEV = ["ruff==0.17.6", "mypy==2.4.1", "types-redis"]

#: Every engine this project ships; a URL without a host gets a throwaway server.
ENGINES = [
    "memory://",
    "sqlite://",
    "postgresql://",
    "redis://",
    # the native Redis engine on a server without its durable configuration: what kill -9 of
    # the server loses shows as expected-fail (everysec: fsync once a second; none: no AOF)
    "redis://?server_durability=everysec",
    "redis://?server_durability=none",
    "rq+redis://",
    "dramatiq+redis://",
    "dramatiq+amqp://",
    "huey+redis://",
    "huey+sqlite://",
]

#: Engines in node/, over the process protocol (docs/process-protocol.md); they need Node.js.
NODE_ENGINES = ["exec+bullmq-node+redis://", "exec+bee-queue+redis://", "exec+example://"]
NODE_DIR = Path(__file__).parent / "node"


def install(session: nox.Session, *extra: str) -> None:
    """The package with every engine's driver, plus ``extra`` tools; and, where Node.js is
    present, the Node engines' libraries (``npm ci`` in node/, from its lock file)."""
    session.install("-e", ".[all]", *extra)
    if shutil.which("npm") is None:
        session.warn("Node.js/npm not found: the Node engines in node/ are unavailable here")
        return
    with session.chdir(NODE_DIR):
        session.run("npm", "ci", "--no-audit", "--no-fund", external=True, silent=True)


def engines() -> list[str]:
    """Every engine to run by default: the Python ones, and the Node ones where Node.js is."""
    return ENGINES + NODE_ENGINES if shutil.which("node") else ENGINES


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    install(session, *DEV)
    session.run("ruff", "check", "src", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py")
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    install(session)
    session.run("pytest", "tests", *session.posargs)


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """Run the suite on the given engine URLs (default: every engine) and write results."""
    install(session)
    session.run("obsqueue", "engines")
    session.run("obsqueue", "conformance", *(session.posargs or engines()))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The drain benchmark on the given engine URLs (default: every engine), beside raw loops."""
    install(session)
    session.run("obsqueue", "bench", "drain", *(session.posargs or engines()))
