"""``python -m obsqueue.probes URL… --results DIR [--commit SHA]``: the decision-row probes."""

from __future__ import annotations

import argparse
import sys

from obsqueue.engines import engine_class
from obsqueue.errors import ObsqueueError
from obsqueue.probes.run import run_probes
from obsqueue.probes.shipped import engine_urls, engine_weights
from obsqueue.results import add_results_option
from obsqueue.servers import split_server_durability


def check_urls(urls: list[str]) -> int:
    """0 when every URL names a registered engine whose driver is installed; else 2, each
    problem on stderr."""
    bad = 0
    for url in urls:
        try:
            engine_class(split_server_durability(url)[0])
        except ObsqueueError as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            bad += 1
    return 2 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m obsqueue.probes",
        description="Measure privacy (canary in storage files), dependency footprint, server "
        "processes, durability settings and glue of each engine; write privacy-<engine>.json and "
        "facts-<engine>.json.",
    )
    parser.add_argument("urls", nargs="*", metavar="URL")
    parser.add_argument(
        "--list", action="store_true", help="print the URLs of every registered engine and exit"
    )
    parser.add_argument(
        "--weights",
        action="store_true",
        help="print 'weight URL' for every shipped engine (its suite's expected duration, for "
        "running the longest first) and exit",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that each URL names a usable engine"
    )
    add_results_option(parser)
    parser.add_argument("--commit", default=None, help="the commit measured (recorded)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(engine_urls()))
        return 0
    if args.weights:
        print("\n".join(f"{weight} {url}" for url, weight in engine_weights().items()))
        return 0
    if not args.urls:
        parser.error("give engine URLs, or --list")
    if args.check:
        return check_urls(args.urls)
    return run_probes(
        args.urls,
        args.results,
        commit=args.commit,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )


if __name__ == "__main__":
    sys.exit(main())
