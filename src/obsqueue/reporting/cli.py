"""The ``report`` and ``scorecard`` commands; ``obsqueue.cli`` delegates to :func:`run`.

Only argument parsing lives here; pandas, matplotlib and rich are imported when a command runs,
so ``obsqueue --help`` works without the ``report`` extra.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from obsqueue.results import add_results_option

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = frozenset({"report", "scorecard"})
NEEDS = "the scorecard needs the report extra: pip install 'obsqueue[report]'"


def _paths(parser: argparse.ArgumentParser) -> None:
    add_results_option(parser, "directory of")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        help="where scorecard.md, scorecard.html and charts/ go (default: %(default)s)",
    )


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``report`` and ``scorecard`` to the ``obsqueue`` command."""
    report = subparsers.add_parser(
        "report",
        help="turn results JSON into reports/scorecard.{md,html} and charts",
        description="Read every results file in --results (conformance, benchmark, microbench, "
        "privacy, facts) and write scorecard.md, a self-contained scorecard.html and charts/ "
        "(PNG and SVG) into --out. A file that is corrupt or of another schema version is "
        "listed as a gap with its reason.",
    )
    _paths(report)
    card = subparsers.add_parser(
        "scorecard",
        help="the main job: probes, conformance, quick benchmarks on every engine, the report",
        description="Run the decision-row probes and the conformance suite on each engine URL "
        "(engines in parallel), then `obsqueue bench --profile quick` one engine at a time, "
        "then `obsqueue report`. Without URLs: every engine this project ships; engines that "
        "cannot run here are reported unavailable with the reason.",
    )
    card.add_argument("urls", nargs="*", metavar="URL", help="engine URLs (default: every engine)")
    _paths(card)
    card.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="engines run at once (default: %(default)s, the cores up to 2)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console

        from obsqueue.reporting.build import build_report
        from obsqueue.reporting.job import check_engines, default_engines, run_scorecard
        from obsqueue.reporting.load import ReportInputError
        from obsqueue.reporting.matrix import terminal_matrix
    except ImportError as exc:
        print(f"obsqueue: {NEEDS} ({exc})", file=sys.stderr)
        return 2
    try:
        if args.command == "scorecard":
            urls = list(args.urls or default_engines())
            problem = check_engines(urls)
            if problem:
                print(f"obsqueue scorecard: {problem}", file=sys.stderr)
                return 2
            args.results.mkdir(parents=True, exist_ok=True)
            return run_scorecard(
                urls, args.results, args.out, jobs=args.jobs, console=Console(stderr=True)
            )
        report = build_report(args.results, args.out)
    except ReportInputError as exc:
        print(f"obsqueue report: {exc}", file=sys.stderr)
        return 2
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"obsqueue {args.command}: a step could not run: {exc}", file=sys.stderr)
        return 2
    if report.matrix is not None:
        print(terminal_matrix(report.matrix))
    for gap in report.gaps:
        print(f"gap: {gap}", file=sys.stderr)
    print(
        f"scorecard: {report.html} ({report.markdown}; {len(report.charts)} charts; "
        f"{len(report.missing)} cells not measured, listed under 'Gaps')"
    )
    return 0
