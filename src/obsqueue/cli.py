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
from pathlib import Path

from obsqueue.engines import engine_class, registered_engines
from obsqueue.errors import ObsqueueError

__all__ = ["main"]

EPILOG = """\
engine URLs:
  sqlite:///obs.db            the embedded default (sqlite:////abs/path for absolute paths)
  memory://                   in-process reference engine
  postgresql://user@host/db   PostgreSQL (FOR UPDATE SKIP LOCKED)
  redis://host:6379/0         native Redis engine (Lua scripts)
  rq+redis://…  dramatiq+redis://…  dramatiq+amqp://…  huey+redis://…  huey+sqlite:///…

For `conformance`, a URL without a host asks obsqueue for the server: $OBSQUEUE_POSTGRES_URL,
$OBSQUEUE_REDIS_URL or $OBSQUEUE_AMQP_URL if set, else a throwaway server started from the
installed binaries on a free loopback port. Add ?server_durability=everysec|none (Redis) to run
the server without its durable configuration; durability failures then show as expected-fail.
`bench` provisions servers the same way.
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
    conf.add_argument(
        "--results",
        type=Path,
        default=Path("reports/results"),
        help="directory for results JSON (default: %(default)s)",
    )
    conf.add_argument(
        "-k", dest="keyword", default=None, help="only tests matching this pytest -k expression"
    )
    conf.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failure")
    conf.add_argument(
        "-q", "--quiet", action="store_true", help="one character per test instead of one line"
    )
    from obsqueue.benchmarks.cli import add_parser as add_bench_parser

    add_bench_parser(commands, EPILOG)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    from obsqueue.benchmarks.cli import run

    return run(args)


def cmd_engines() -> int:
    rows = []
    for scheme, entry in sorted(registered_engines().items()):
        try:
            cls = engine_class(scheme)
        except ObsqueueError as exc:
            rows.append((scheme, entry.target, "no", str(exc)))
            continue
        rows.append((scheme, entry.target, *_usable(cls.server_kind)))
    width = max(len(r[0]) for r in rows) + 3
    print(f"{'scheme':<{width}} {'usable':<7} notes")
    for scheme, target, usable, note in rows:
        print(f"{scheme + '://':<{width}} {usable:<7} {note}  [{target}]")
    return 0


def _usable(server_kind: str | None) -> tuple[str, str]:
    if server_kind is None:
        return "yes", "embedded: no server needed"
    from obsqueue.servers import ENV_VARS, ServerUnavailableError, throwaway_source

    env_var = ENV_VARS.get(server_kind, "")
    if os.environ.get(env_var):
        return "yes", f"server from ${env_var}"
    try:
        return "yes", f"throwaway {server_kind} from {throwaway_source(server_kind)}"
    except ServerUnavailableError as exc:
        return "no", str(exc)


def cmd_conformance(args: argparse.Namespace) -> int:
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
        "-rfE",
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
        return cmd_conformance(args)
    except ObsqueueError as exc:
        print(f"obsqueue: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
