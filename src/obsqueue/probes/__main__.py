"""``python -m obsqueue.probes URL… --results DIR [--commit SHA]``: the decision-row probes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from obsqueue.probes.run import run_probes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m obsqueue.probes",
        description="Measure privacy (canary in storage files), dependency footprint, server "
        "processes, durability settings and glue of each engine; write privacy-<engine>.json and "
        "facts-<engine>.json.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL")
    parser.add_argument("--results", type=Path, default=Path("reports/results"))
    parser.add_argument("--commit", default=None, help="the commit measured (recorded)")
    args = parser.parse_args(argv)
    return run_probes(
        args.urls,
        args.results,
        commit=args.commit,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )


if __name__ == "__main__":
    sys.exit(main())
