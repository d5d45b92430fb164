"""``obsqueue bench``: argument parsing and the run; ``obsqueue.cli`` only delegates here.

``obsqueue bench [--workload NAME|FILE]… [--profile quick|full] [--durability-sweep]
[--self-check] URL…`` runs each workload on each engine URL in rounds beside its ceiling and
peers, shows live progress on stderr and writes ``<results>/bench-<engine>-<workload>.json``.
Exit status: 0 when every engine ran (or was reported unavailable) and the self-checks held,
1 when a result is ``failed`` or a self-check failed, 2 on bad input, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from obsqueue.benchmarks.workload import (
    PROFILES,
    REFERENCES,
    WorkloadError,
    load_workload,
    shipped_workloads,
)
from obsqueue.results import add_results_option

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Run benchmark workloads on engine URLs. Each engine runs in rounds beside the raw backend doing
the same work (the ceiling) and the peer libraries on the same backend, interleaved round by
round; ratios are taken within a round. Producers and consumers are separate processes; latency
is measured from each message's intended send time (HdrHistogram per stage).
"""


def add_parser(subparsers: Any, epilog: str = "") -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="run benchmark workloads on engine URLs beside their ceiling and peers",
        description=DESCRIPTION + f"\nShipped workloads: {', '.join(shipped_workloads())}.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("urls", nargs="*", metavar="URL", help="engine URLs (see below)")
    parser.add_argument(
        "-w",
        "--workload",
        action="append",
        metavar="NAME|FILE",
        help="a shipped workload or a TOML file; repeatable (default: sessions)",
    )
    parser.add_argument("--profile", choices=PROFILES, default="quick", help="default: quick")
    parser.add_argument("--rounds", type=int, default=None, help="override the file's rounds")
    add_results_option(parser)
    parser.add_argument(
        "--durability-sweep",
        action="store_true",
        help="run each URL in every durability configuration of its backend (SQLite "
        "synchronous, PostgreSQL synchronous_commit, Redis appendfsync) and join each with "
        "the conformance results of that configuration",
    )
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="also check the harness: a null target >= 10x the fastest engine on the first "
        "workload, and a 10 ms injected delay reading 10 ms +- 1 ms at p50 in `latency`",
    )
    parser.add_argument(
        "--references",
        choices=REFERENCES,
        default="auto",
        help="beside each engine: its raw ceiling and every peer library on its backend (all), "
        "or only the ceiling (ceiling); auto (the default): all beside the first engine of each "
        "backend given, the ceiling beside the others (the peers of one backend are the same "
        "libraries whichever engine they stand beside)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no live progress")
    return parser


def refuse_workload_names(urls: list[str]) -> None:
    """``obsqueue bench drain sqlite://`` (the old positional workload) points to ``--workload``."""
    for url in urls:
        if "://" not in url and url in shipped_workloads():
            raise WorkloadError(url, "URL", f"a workload, not an engine URL: use --workload {url}")


def run(args: argparse.Namespace) -> int:
    """Run what ``args`` asks for; returns the exit status."""
    from obsqueue.benchmarks.durability import Config, configs_for, write_sweep
    from obsqueue.benchmarks.progress import LiveProgress
    from obsqueue.benchmarks.runner import run_benchmarks
    from obsqueue.benchmarks.selfcheck import run_self_checks
    from obsqueue.engines import engine_class
    from obsqueue.errors import InvalidMessageError
    from obsqueue.servers import ENV_VARS, SOURCES_VAR

    if not args.urls and not args.self_check:
        raise InvalidMessageError("URL", "give at least one engine URL (or --self-check)")
    refuse_workload_names(args.urls)
    for url in args.urls:
        engine_class(url)  # an unknown scheme or a missing driver is refused before anything runs
    workloads = [load_workload(w, args.profile) for w in (args.workload or ["sessions"])]
    if args.rounds is not None:
        workloads = [dataclasses.replace(w, rounds=max(1, args.rounds)) for w in workloads]
    names = (*ENV_VARS.values(), SOURCES_VAR)
    env_urls = {var: os.environ[var] for var in names if os.environ.get(var)}
    failed = False
    try:
        with LiveProgress(quiet=args.quiet) as live:
            for workload in workloads:
                groups = (
                    [configs_for(url) for url in args.urls]
                    if args.durability_sweep
                    else [[Config(url, {}) for url in args.urls]]
                )
                for configs in groups:
                    docs = run_benchmarks(
                        configs,
                        workload,
                        args.results,
                        env_urls=env_urls,
                        live=live,
                        references=args.references,
                    )
                    failed |= any(d["status"] == "failed" for d in docs)
                    if args.durability_sweep and docs:
                        path = write_sweep(args.results, docs, configs)
                        live.log(f"durability sweep -> {path}")
            if args.self_check:
                failed |= not run_self_checks(workloads[0], args.results, live)
    except KeyboardInterrupt:
        return 130
    return 1 if failed else 0
