"""nox sessions: the same commands in CI and on a laptop.

nox -s conformance   the main job: the conformance suite on every engine, results JSON
nox -s tests         lint, then the project's own tests (unit, integration, acceptance)
nox -s lint          ruff (lint + format check) and mypy --strict on src/
nox -s microbench    per-operation costs (pytest-benchmark) of each engine, results JSON
"""

from __future__ import annotations

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


def install(session: nox.Session, *extra: str) -> None:
    """The package with every engine's driver, plus ``extra`` tools."""
    session.install("-e", ".[all]", *extra)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    install(session, *DEV)
    session.run("ruff", "check", "src", "tests", "microbench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "microbench", "noxfile.py")
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
    session.run("obsqueue", "conformance", *(session.posargs or ENGINES))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The drain benchmark on the given engine URLs (default: every engine), beside raw loops."""
    install(session)
    session.run("obsqueue", "bench", "drain", *(session.posargs or ENGINES))


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
