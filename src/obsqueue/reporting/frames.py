"""Results documents as tidy pandas DataFrames, one row per fact, each with its run label."""

from __future__ import annotations

from typing import Any

import pandas as pd

from obsqueue.reporting.load import Results
from obsqueue.reporting.provenance import RunIndex

__all__ = ["Frames", "build_frames", "durability_text", "wakeup_ms"]

#: Schema-1 drain figures, renamed so they are never read as end-to-end latency.
V1_SERVICE = {"p50_ms": "service_p50_ms", "p90_ms": "service_p90_ms", "p99_ms": "service_p99_ms"}


def durability_text(settings: Any) -> str:
    """``{"appendfsync": "always", …}`` -> ``appendfsync=always, …`` (the identity of a figure)."""
    if not isinstance(settings, dict) or not settings:
        return "not recorded"
    return ", ".join(f"{k}={v}" for k, v in settings.items() if v not in ("", None))


class Frames:
    """The DataFrames every section reads."""

    def __init__(self, results: Results) -> None:
        self.results = results
        runs = results.of("scorecard-run")
        self.job = max(runs, key=lambda d: str(d.get("started_at"))) if runs else None
        self.runs = RunIndex(self.job)
        self.engines = pd.DataFrame(
            [self._engine_row(d) for d in results.of("conformance")],
            columns=["engine", "run", "capabilities", "durability", "server_kind", "file"],
        )
        self.properties = pd.DataFrame(
            [row for d in results.of("conformance") for row in self._property_rows(d)],
            columns=[
                "engine",
                "run",
                "id",
                "title",
                "outcome",
                "reason",
                "anomalies",
                "expected",
                "timings",
            ],
        )
        self.tests = pd.DataFrame(
            [row for d in results.of("conformance") for row in self._test_rows(d)],
            columns=["engine", "name", "properties", "outcome", "anomalies"],
        )
        bench = results.of("benchmark")
        self.bench = pd.DataFrame([row for d in bench for row in self._bench_rows(d)])
        self.points = pd.DataFrame(
            [p | {"engine": bench_label(d)} for d in bench for p in _points(d)]
        )
        self.histograms = pd.DataFrame([row for d in bench for row in _histogram_rows(d)])
        self.micro = pd.DataFrame([row for d in results.of("microbench") for row in self._micro(d)])
        self.facts = {d["engine"]: d | {"run": self.runs.label(d)} for d in results.of("facts")}
        self.privacy = {d["engine"]: d | {"run": self.runs.label(d)} for d in results.of("privacy")}

    def _engine_row(self, d: dict[str, Any]) -> dict[str, Any]:
        server = d.get("server") or {}
        return {
            "engine": d["engine"],
            "run": self.runs.label(d),
            "capabilities": list(d.get("capabilities") or []),
            "durability": (d.get("versions") or {}).get("durability"),
            "server_kind": server.get("kind") if isinstance(server, dict) else None,
            "file": d["_file"],
        }

    def _property_rows(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        run = self.runs.label(d)
        return [
            {
                "engine": d["engine"],
                "run": run,
                "id": p.get("id"),
                "title": p.get("title", ""),
                "outcome": p.get("outcome", "missing"),
                "reason": p.get("reason") or "",
                "anomalies": dict(p.get("anomalies") or {}),
                "expected": p.get("expected_anomaly") or p.get("expected"),
                "timings": dict(p.get("timings") or {}),
            }
            for p in d["properties"]
            if isinstance(p, dict)
        ]

    @staticmethod
    def _test_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
        tests = d.get("tests") or []
        return [
            {
                "engine": d["engine"],
                "name": t.get("name", ""),
                "properties": list(t.get("properties") or []),
                "outcome": t.get("outcome", ""),
                "anomalies": dict(t.get("anomalies") or {}),
            }
            for t in tests
            if isinstance(t, dict)
        ]

    def _bench_rows(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        base = {
            "engine": bench_label(d),
            "run": self.runs.label(d),
            "schema": d.get("schema_version"),
            "file": d["_file"],
            "status": d.get("status", "ok"),
            "reason": d.get("reason"),
        }
        if d.get("schema_version") == 1:
            return _v1_rows(d, base)
        workload = d.get("workload")
        base |= {
            "workload": workload if isinstance(workload, str) else str(workload),
            "profile": d.get("profile"),
            "durability": durability_text(d.get("durability")),
        }
        summary = d.get("summary") or {}
        if not summary:
            return [base | {"target": None, "kind": None}]
        return [
            base
            | {
                "target": name,
                "kind": s.get("kind"),
                "weaker": ", ".join(s.get("weaker") or []),
                "ratio_to_ceiling": (s.get("ratio_to_ceiling") or {}).get("median"),
                "ratio_to_peers": s.get("ratio_to_peers") or {},
                **(s.get("figures") or {}),
            }
            for name, s in summary.items()
        ]

    def _micro(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        run = self.runs.label(d)
        stem = d["_file"].removeprefix("microbench-").removesuffix(".json")
        rows = []
        for b in d.get("benchmarks") or []:
            stats = b.get("stats") or {}
            name = str(b.get("name") or "")
            test, _, param = name.partition("[")
            engine = (b.get("params") or {}).get("engine") or param.rstrip("]") or stem
            rows.append(
                {
                    "engine": str(engine),
                    "run": run,
                    "name": name,
                    "group": b.get("group") or test,
                    "median_us": float(stats.get("median", float("nan"))) * 1e6,
                    "ops": stats.get("ops"),
                    "rounds": stats.get("rounds"),
                }
            )
        return rows


def _v1_rows(d: dict[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Schema 1 (``bench drain``): the engine and its raw reference, service-time percentiles."""
    workload = d.get("workload") or {}
    base |= {
        "workload": workload.get("name", "drain") if isinstance(workload, dict) else workload,
        "profile": "drain (schema 1)",
        "durability": durability_text((d.get("describe") or {}).get("durability")),
    }
    figures = d.get("figures") or {}
    service = {
        V1_SERVICE[k]: v for k, v in (figures.get("service_time") or {}).items() if k in V1_SERVICE
    }
    rows = [
        base
        | {
            "target": "obsqueue",
            "kind": "engine",
            "enqueue_per_s": figures.get("enqueue_per_s"),
            "drained_per_s": figures.get("drained_per_s"),
            "ratio_to_ceiling": figures.get("drained_vs_reference"),
            **service,
        }
    ]
    ref = d.get("reference")
    if isinstance(ref, dict):
        rows.append(
            base
            | {
                "target": ref.get("name", "raw"),
                "kind": "ceiling",
                "enqueue_per_s": ref.get("enqueue_per_s"),
                "drained_per_s": ref.get("drained_per_s"),
            }
        )
    return rows


def bench_label(d: dict[str, Any]) -> str:
    """The engine label of a benchmark file, as conformance files name it: from the file name
    ``bench-<label>-<workload>.json`` (the ``engine`` field names the scheme, e.g. ``redis``
    for ``redis-none`` too)."""
    workload = d.get("workload")
    name = workload.get("name") if isinstance(workload, dict) else workload
    stem = str(d["_file"]).removeprefix("bench-").removesuffix(".json")
    if name and stem.endswith(f"-{name}"):
        return stem.removesuffix(f"-{name}")
    return str(d["engine"]).replace("+", "-")


def _points(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in d.get("points") or [] if isinstance(p, dict)]


def _histogram_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for target, stages in (d.get("histograms") or {}).items():
        for stage, pairs in (stages or {}).items():
            rows += [
                {
                    "engine": bench_label(d),
                    "target": target,
                    "stage": stage,
                    "percentile": p,
                    "ms": ms,
                }
                for p, ms in pairs
            ]
    return rows


def wakeup_ms(frames: Frames) -> dict[str, dict[str, float]]:
    """Per engine: the suite's P9 wakeup percentiles (ms) of a consumer in another process —
    ``{"p50": …, "p99": …}`` from timings named ``…another_process….wakeup_p50_s``."""
    out: dict[str, dict[str, float]] = {}
    rows = frames.properties[frames.properties["id"] == "P9"]
    for row in rows.to_dict("records"):
        for name, value in row["timings"].items():
            test, _, metric = str(name).rpartition(".")
            if "another_process" in test and metric in ("wakeup_p50_s", "wakeup_p99_s"):
                key = metric.removeprefix("wakeup_").removesuffix("_s")
                out.setdefault(str(row["engine"]), {})[key] = float(value) * 1000
    return out


def build_frames(results: Results) -> Frames:
    return Frames(results)
