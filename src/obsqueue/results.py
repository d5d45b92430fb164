"""The results format shared by the conformance suite, the benchmarks and the reports.

One small, schema-versioned module: writers build plain dicts through these helpers, readers
check ``schema_version`` and refuse files they do not understand. Reports import only this.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

__all__ = [
    "OUTCOMES",
    "READABLE_VERSIONS",
    "RESULTS_DIR",
    "SCHEMA_VERSION",
    "DEFAULT_READABLE",
    "ResultsFormatError",
    "add_results_option",
    "conformance_path",
    "environment",
    "peers_once_per_backend",
    "read_results",
    "safe_label",
    "write_results",
]

#: The version every kind is written with. 2 added, to conformance results: the outcome
#: ``partial``; per property ``expected_anomalies`` and ``untested``; ``complete``, ``selection``,
#: ``server_durability`` and ``crash_durability``; per test ``expected`` and ``verdicts``. Benchmark
#: results of version 2 have rounds, summary and histograms
#: (``benchmarks/schema/bench-result-v2.json``).
SCHEMA_VERSION: Final = 2

#: Where every command writes and reads results JSON unless told ``--results DIR``.
RESULTS_DIR: Final = Path("reports/results")


def add_results_option(parser: argparse.ArgumentParser, what: str = "directory for") -> None:
    """The ``--results DIR`` option every command that writes or reads results JSON takes."""
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS_DIR,
        help=f"{what} results JSON (default: %(default)s)",
    )


#: Schema versions this code reads, per kind: version 1 conformance files are a subset of 2;
#: version 1 benchmark files (the old drain-only shape) are not read.
READABLE_VERSIONS: Final = {"benchmark": (2,)}
DEFAULT_READABLE: Final = (1, 2)

#: Per property and engine (docs/properties.md, "Outcomes"), from best to worst news.
OUTCOMES: Final = ("pass", "partial", "unsupported", "expected-fail", "unknown", "fail")


class ResultsFormatError(ValueError):
    """A results file is not obsqueue results JSON of a schema version this code reads."""


def safe_label(text: str) -> str:
    """A file-name-safe label: ``rq+redis`` -> ``rq-redis``."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower())
    return "-".join(part for part in cleaned.split("-") if part) or "engine"


def conformance_path(directory: Path, engine_label: str) -> Path:
    return directory / f"conformance-{safe_label(engine_label)}.json"


def environment() -> dict[str, Any]:
    """Where a result was measured: machine, OS and Python."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def write_results(path: Path, kind: str, body: dict[str, Any]) -> Path:
    """Write ``body`` as results of ``kind`` ("conformance", "benchmark"), atomically."""
    document = {"schema_version": SCHEMA_VERSION, "kind": kind, **body}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n", "utf-8")
    tmp.replace(path)
    return path


def read_results(path: Path, kind: str | None = None) -> dict[str, Any]:
    """Read a results file, checking its schema version (and kind, if given)."""
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsFormatError(f"{path}: not readable results JSON ({exc})") from exc
    found_kind = document.get("kind") if isinstance(document, dict) else None
    readable = READABLE_VERSIONS.get(str(kind or found_kind), DEFAULT_READABLE)
    if not isinstance(document, dict) or document.get("schema_version") not in readable:
        found = document.get("schema_version") if isinstance(document, dict) else None
        raise ResultsFormatError(
            f"{path}: schema_version {found!r} is not one of {readable}; "
            "regenerate it with this obsqueue version"
        )
    if kind is not None and document.get("kind") != kind:
        raise ResultsFormatError(f"{path}: kind {document.get('kind')!r}, expected {kind!r}")
    return document


def peers_once_per_backend(urls: Sequence[str]) -> set[str]:
    """Which engines of a run carry the peer libraries' results: the first URL of each backend
    (the last part of the scheme: ``huey+sqlite`` -> sqlite) runs beside every peer library, the
    others beside their raw ceiling only, since the peers of one backend are the same libraries
    whichever engine they stand beside."""
    first: dict[str, str] = {}
    for url in urls:
        first.setdefault(url.partition("://")[0].rsplit("+", 1)[-1], url)
    return set(first.values())
