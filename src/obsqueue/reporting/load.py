"""Read a results directory: every file by its kind and schema version, or a gap with a reason.

A file that is missing, not JSON, of an unknown kind or of a schema version this code does not
read becomes a :class:`Gap` naming the file and what to do; the report shows gaps beside the
tables they leave holes in. pytest-benchmark's own JSON (``microbench-*.json``) has no obsqueue
header and is recognised by its shape.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["READABLE", "Gap", "ReportInputError", "Results", "load_results"]

#: The (kind, schema_version) pairs this report reads.
READABLE: Final[dict[str, frozenset[int]]] = {
    "conformance": frozenset({1, 2}),
    "benchmark": frozenset({1, 2}),
    # the scorecard's own kinds, written with results.write_results (the shared version number)
    "privacy": frozenset({1, 2}),
    "facts": frozenset({1, 2}),
    "scorecard-run": frozenset({1, 2}),
    "microbench": frozenset({3, 4, 5}),  # pytest-benchmark's own "version" major
}

#: Keys without which a document of a kind cannot be shown at all.
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "conformance": ("engine", "properties"),
    "benchmark": ("engine", "workload"),
    "privacy": ("engine", "status"),
    "facts": ("engine", "status"),
    "scorecard-run": ("started_at", "tasks"),
}


class ReportInputError(ValueError):
    """The results directory itself cannot be read (the message says what to run)."""


@dataclass(frozen=True)
class Gap:
    """A results file that could not be used, and why."""

    path: str
    reason: str


@dataclass
class Results:
    """Every readable document by kind, and the gaps."""

    directory: Path
    documents: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    gaps: list[Gap] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.documents.get(kind, [])


def _microbench(document: dict[str, Any]) -> bool:
    return "benchmarks" in document and "machine_info" in document


def _classify(name: str, document: Any) -> tuple[str | None, str]:
    """The document's kind, or None and the reason it is not readable."""
    if not isinstance(document, dict):
        return None, "not a JSON object"
    if _microbench(document):
        major = str(document.get("version", "")).split(".", 1)[0]
        if not major.isdigit() or int(major) not in READABLE["microbench"]:
            return None, f"pytest-benchmark JSON version {document.get('version')!r} not read"
        return "microbench", ""
    kind, version = document.get("kind"), document.get("schema_version")
    if kind not in READABLE:
        return None, f"unknown kind {kind!r} (known: {', '.join(sorted(READABLE))})"
    if version not in READABLE[kind]:
        known = ", ".join(str(v) for v in sorted(READABLE[kind]))
        return None, (
            f"{kind} schema_version {version!r} is not one this report reads ({known}); "
            "regenerate it with this obsqueue version, or update obsqueue"
        )
    missing = [key for key in REQUIRED.get(str(kind), ()) if key not in document]
    if missing:
        return None, f"{kind} results without {', '.join(missing)}"
    return str(kind), ""


def load_results(directory: Path) -> Results:
    """Read every ``*.json`` in ``directory``; raises only when the directory is unusable."""
    if not directory.is_dir():
        raise ReportInputError(
            f"no results directory {directory}: run `obsqueue scorecard` (or `obsqueue "
            "conformance URL…`) first, or pass --results DIR"
        )
    results = Results(directory)
    files = sorted(directory.glob("*.json"))
    if not files:
        raise ReportInputError(
            f"{directory} holds no results JSON: run `obsqueue scorecard` first, or pass "
            "--results DIR"
        )
    for path in files:
        try:
            document = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            results.gaps.append(Gap(path.name, f"not readable JSON ({exc})"))
            continue
        kind, reason = _classify(path.name, document)
        if kind is None:
            results.gaps.append(Gap(path.name, reason))
            continue
        document["_file"] = path.name
        results.documents[kind].append(document)
    return results
