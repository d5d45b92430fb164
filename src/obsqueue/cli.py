"""``obsqueue`` — the command line: list engines, run the conformance suite, benchmark.

The CLI sits on top of everything and is, with the pytest plugin, the only place that reads the
environment (``OBSQUEUE_POSTGRES_URL``, ``OBSQUEUE_REDIS_URL``, ``OBSQUEUE_AMQP_URL``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import resources

from obsqueue.engines import engine_class, registered_engines
from obsqueue.errors import ObsqueueError
from obsqueue.reporting import cli as reporting_cli
from obsqueue.results import add_results_option

__all__ = ["main", "validate_engine_urls"]


class RefusedError(ObsqueueError):
    """The command line names engine URLs that cannot run; nothing was started."""


EPILOG = """\
engine URLs:
  sqlite:///obs.db            the embedded default (sqlite:////abs/path for absolute paths)
  memory://                   in-process reference engine
  postgresql://user@host/db   PostgreSQL (FOR UPDATE SKIP LOCKED)
  redis://host:6379/0         native Redis engine (Lua scripts)
  rq+redis://…  dramatiq+redis://…  dramatiq+amqp://…  huey+redis://…  huey+sqlite:///…
  bullmq+redis://…            BullMQ's Python package (a queue per session)
  exec+bullmq-node+redis://…  exec+bee-queue+redis://…  exec+example://
                              Node.js engines over the process protocol (docs/process-protocol.md)

A URL without a host asks obsqueue for the server: $OBSQUEUE_POSTGRES_URL, $OBSQUEUE_REDIS_URL
or $OBSQUEUE_AMQP_URL if set, else a throwaway server started from the installed binaries on a
free loopback port, else a container (testcontainers) where a Docker engine answers, else the
engine is reported unavailable with the reason. $OBSQUEUE_SERVER_SOURCES (e.g. testcontainers)
narrows that order. Add ?server_durability=everysec|none (Redis) or =async (PostgreSQL) to run
the server without its durable configuration; durability failures then show as expected-fail.
Bad URLs (unknown scheme, malformed, missing driver) are refused before anything runs (exit 2).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obsqueue",
        description="Which queue engine to trust with a durable, per-session stream of work.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "engines",
        help="list registered engines and whether each is usable here",
        description="List every registered engine scheme, where it comes from, and whether it "
        "is usable on this machine (driver installed, server reachable or startable).",
    )
    conf = commands.add_parser(
        "conformance",
        help="run the conformance suite (P1-P16) on engine URLs",
        description="Run the shared conformance suite on each engine URL, print the engine x "
        "property matrix and write reports/results/conformance-<engine>.json. Exits "
        "non-zero when a property an engine declares fails.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conf.add_argument("urls", nargs="+", metavar="URL", help="engine URLs (see below)")
    add_results_option(conf)
    conf.add_argument(
        "-k", dest="keyword", default=None, help="only tests matching this pytest -k expression"
    )
    conf.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failure")
    conf.add_argument(
        "-q", "--quiet", action="store_true", help="one character per test instead of one line"
    )
    from obsqueue.benchmarks.cli import add_parser as add_bench_parser

    add_bench_parser(commands, EPILOG)
    reporting_cli.add_parsers(commands)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    from obsqueue.benchmarks.cli import refuse_workload_names, run

    refuse_workload_names(args.urls)
    validate_engine_urls(args.urls)
    return run(args)


def cmd_engines() -> int:
    from obsqueue.servers import ENV_VARS, ServerUnavailableError, find_source, source_order

    order = source_order(os.environ)
    rows = []
    for scheme, entry in sorted(registered_engines().items()):
        try:
            kind = engine_class(scheme).server_kind
        except ObsqueueError as exc:
            rows.append((scheme, entry.target, "no", str(exc)))
            continue
        if kind is None:
            rows.append((scheme, entry.target, "yes", "embedded: no server needed"))
            continue
        try:
            source = find_source(kind, env_url=os.environ.get(ENV_VARS[kind]), order=order)
        except ServerUnavailableError as exc:
            rows.append((scheme, entry.target, "no", f"no {kind} server: {exc}"))
        else:
            rows.append((scheme, entry.target, "yes", f"{kind} from {source}"))
    width = max(len(r[0]) for r in rows) + 3
    print(f"{'scheme':<{width}} {'usable':<7} notes")
    for scheme, target, usable, note in rows:
        print(f"{scheme + '://':<{width}} {usable:<7} {note}  [{target}]")
    return 0


def validate_engine_urls(urls: Sequence[str]) -> None:
    """Refuse bad engine URLs once, before anything runs (``servers/door.py``)."""
    from obsqueue.servers.door import refuse_bad_urls

    refusal = refuse_bad_urls(urls, os.environ)
    if refusal is not None:
        raise RefusedError(refusal)


def cmd_conformance(args: argparse.Namespace) -> int:
    validate_engine_urls(args.urls)
    import pytest

    suite = resources.files("obsqueue.conformance").joinpath("suite")
    ini = resources.files("obsqueue.conformance").joinpath("pytest.ini")
    argv = [
        str(suite),
        "-c",
        str(ini),
        "--rootdir",
        str(suite),
        "-p",
        "no:cacheprovider",
        "--obsqueue-results",
        str(args.results.resolve()),
        "-rfEs",  # failures, errors, and why a test was skipped (unsupported / unknown)
    ]
    argv += ["-q"] if args.quiet else ["-v"]
    for url in args.urls:
        argv += ["--obsqueue-engine", url]
    if args.keyword:
        argv += ["-k", args.keyword]
    if args.exitfirst:
        argv.append("-x")
    print(
        f"obsqueue conformance: {len(args.urls)} engine(s); results -> {args.results}", flush=True
    )
    code = pytest.main(argv)
    return int(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "engines":
            return cmd_engines()
        if args.command == "bench":
            return cmd_bench(args)
        if args.command in reporting_cli.COMMANDS:
            return reporting_cli.run(args)
        return cmd_conformance(args)
    except ObsqueueError as exc:
        print(f"obsqueue: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
