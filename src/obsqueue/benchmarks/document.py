"""The benchmark result file (schema_version 2): built, validated against the published JSON
Schema shipped in the package (``benchmarks/schema/bench-result-v2.json``), written atomically.

A document that does not validate is never written: ``ResultInvalidError`` names the path in the
document and the schema's complaint (a harness bug, not a user error).
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from obsqueue.benchmarks.rounds import RoundsResult
from obsqueue.benchmarks.workload import Workload
from obsqueue.errors import ObsqueueError, redact_url
from obsqueue.results import SCHEMA_VERSION, environment, safe_label, write_results

__all__ = [
    "BENCH_SCHEMA_VERSION",
    "ResultInvalidError",
    "bench_path",
    "bench_schema",
    "build_document",
    "validate_document",
    "write_document",
]

BENCH_SCHEMA_VERSION = SCHEMA_VERSION
SCHEMA_FILE = "bench-result-v2.json"


class ResultInvalidError(ObsqueueError):
    """A benchmark result does not match the published schema (and was not written)."""


def bench_path(directory: Path, engine_label: str, workload: str) -> Path:
    return directory / f"bench-{safe_label(engine_label)}-{safe_label(workload)}.json"


@functools.cache
def bench_schema() -> dict[str, Any]:
    """The published JSON Schema of a benchmark result."""
    text = resources.files("obsqueue.benchmarks").joinpath(f"schema/{SCHEMA_FILE}").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def commit() -> str | None:
    """The git commit of the working directory, or None outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def build_document(
    *,
    engine: str,
    url: str,
    workload: Workload,
    status: str,
    reason: str | None,
    rounds: RoundsResult | None = None,
    durability: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    references: dict[str, str | None] | None = None,
    targets: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    rounds = rounds or RoundsResult()
    document: dict[str, Any] = {
        "schema_version": BENCH_SCHEMA_VERSION,
        "kind": "benchmark",
        "engine": engine,
        "url": redact_url(url),
        "workload": workload.name,
        "profile": workload.profile,
        "status": status,
        "reason": reason,
        "environment": environment(),
        "commit": commit(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "durability": durability or {},
        "server": server,
        "workload_spec": workload.to_json(),
        "references": references or {"source": None, "note": None},
        "targets": targets or {},
        "rounds": rounds.rounds,
        "summary": rounds.summary,
        "histograms": rounds.histograms,
        "points": rounds.points,
    }
    return document


def validate_document(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        bench_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(document)"
        raise ResultInvalidError(f"benchmark result invalid at {where}: {error.message}")


def write_document(directory: Path, document: dict[str, Any]) -> Path:
    """Validate ``document`` and write it to ``bench-<engine>-<workload>.json`` atomically."""
    validate_document(document)
    body = {k: v for k, v in document.items() if k not in ("schema_version", "kind")}
    path = bench_path(directory, document["engine"], document["workload"])
    return write_results(path, "benchmark", body)
