"""nox sessions: the same commands in CI and on a laptop.

nox -s conformance   the main job: the conformance suite on every engine, results JSON
nox -s tests         lint, then the project's own tests (unit, integration, acceptance)
nox -s lint          ruff (lint + format check) and mypy --strict on src/
nox -s bench         quick `sessions` on every engine + the harness self-checks
nox -s bench-full    every workload at the full profile, the durability sweep, the self-checks
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
    session.run("obsqueue", "conformance", *(session.posargs or ENGINES))


#: ``nox -s bench``: the quick profile of these workloads, on every engine, in < 10 minutes.
QUICK_WORKLOADS = ["sessions"]
#: ``nox -s bench-full``: every shipped workload at the full profile.
FULL_WORKLOADS = ["sessions", "drain", "latency", "idle", "recovery", "scaling"]
#: The durability sweep's engines: one per backend with durability settings.
SWEEP_ENGINES = ["sqlite://", "postgresql://", "redis://"]


def _workloads(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--workload", name)]


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Quick benchmarks on the given engine URLs (default: every engine), then the self-checks."""
    install(session)
    urls = session.posargs or ENGINES
    session.run("obsqueue", "bench", *_workloads(QUICK_WORKLOADS), "--self-check", *urls)


@nox.session(name="bench-full", python=PYTHON)
def bench_full(session: nox.Session) -> None:
    """Every workload at the full profile, the durability sweep and the self-checks."""
    install(session)
    urls = session.posargs or ENGINES
    full = ["--profile", "full"]
    session.run("obsqueue", "bench", *full, *_workloads(FULL_WORKLOADS), "--self-check", *urls)
    sweep = session.posargs or SWEEP_ENGINES
    session.run("obsqueue", "bench", *full, "--durability-sweep", "--workload", "sessions", *sweep)
