"""The performance table: figures, ratios to the ceiling and to the peers of the same round,
with the durability configuration each figure was measured under."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from obsqueue.reporting.frames import Frames
from obsqueue.reporting.model import Section, Table

__all__ = ["FIGURES", "engine_speed", "micro_section", "performance_section"]

#: Column -> heading, in the order shown; a column no row measures is left out.
FIGURES = {
    "drained_per_s": "drained/s",
    "enqueue_per_s": "enqueue/s",
    "e2e_p50_ms": "e2e p50 ms",
    "e2e_p99_ms": "e2e p99 ms",
    "e2e_p999_ms": "e2e p99.9 ms",
    "service_p50_ms": "service p50 ms",
    "service_p99_ms": "service p99 ms",
    "wakeup_p99_ms": "wakeup p99 ms",
    "client_cpu_s_per_1000": "client CPU s/1000",
    "peak_rss_mib": "peak RSS MiB",
    "server_bytes_per_pending": "server B/pending",
    "recovery_s": "recovery s",
    "ratio_to_ceiling": "ratio to ceiling",
}


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _peers(value: Any) -> str:
    if not isinstance(value, dict) or not value:
        return ""
    return ", ".join(
        f"{name} {(r or {}).get('median', float('nan')):.2f}" for name, r in value.items()
    )


def engine_speed(frames: Frames) -> dict[str, float]:
    """drained/s of each engine's own target (the first workload that measures it)."""
    bench = frames.bench
    if bench.empty or "drained_per_s" not in bench:
        return {}
    mine = bench[(bench["kind"] == "engine") & bench["drained_per_s"].notna()]
    return {str(k): float(v) for k, v in mine.groupby("engine")["drained_per_s"].first().items()}


def performance_section(frames: Frames) -> Section:
    section = Section("performance", "Performance")
    bench = frames.bench
    if bench.empty:
        section.missing.append(
            "performance table: no bench-*.json readable "
            "(run `obsqueue bench --profile quick URL…`)"
        )
        return section
    failed = bench[bench["status"] != "ok"]
    for row in failed.itertuples():
        section.missing.append(f"{row.engine} {row.workload}: benchmark {row.status}: {row.reason}")
    ok = bench[bench["status"] == "ok"].copy()
    columns = ["engine", "workload", "target", "kind"]
    shown = [c for c in FIGURES if c in ok and ok[c].notna().any()]
    table = pd.DataFrame({c: ok[c].astype(str) for c in columns})
    for c in shown:
        table[FIGURES[c]] = ok[c].map(_fmt)
    if "ratio_to_peers" in ok:
        table["ratio to peers (same round)"] = ok["ratio_to_peers"].map(_peers)
    table["durability"] = ok["durability"].astype(str)
    table["run"] = ok["run"].astype(str)
    if table["run"].nunique() == 1:
        table = table.drop(columns="run")
    else:
        section.notes.append(
            "Rows come from different runs (machine or commit): see the run column."
        )
    section.table = Table.plain(table.reset_index(drop=True))
    if (ok["schema"] == 1).any():
        section.notes.append(
            "Schema-1 rows (`obsqueue bench drain`): one session drained by one consumer; "
            "'service' percentiles are the time from one delivery to the next, not end-to-end "
            "latency; the ceiling is the raw backend in the same run; no peer libraries ran."
        )
    if "ratio_to_peers" not in ok or not ok["ratio_to_peers"].map(bool).any():
        section.missing.append("ratios to peers: no benchmark result carries ratio_to_peers")
    section.intro = (
        "Each figure is the median over rounds where the harness ran rounds; 'ratio to ceiling' is "
        "drained/s over the raw backend's in the same round. Compare rows only where the "
        "durability column matches."
    )
    return section


def micro_section(frames: Frames) -> Section:
    """Per-operation costs (pytest-benchmark): median microseconds, operation by engine."""
    section = Section("micro", "Per-operation costs (microbench)")
    micro = frames.micro
    if micro.empty:
        section.missing.append(
            "per-operation costs: no microbench-*.json (pytest-benchmark, `nox -s microbench`)"
        )
        return section
    table = micro.pivot_table(index="group", columns="engine", values="median_us", aggfunc="median")
    shown = table.map(_fmt).reset_index().rename(columns={"group": "operation (median µs)"})
    section.table = Table.plain(shown)
    if micro["run"].nunique() > 1:
        section.notes.append("These figures come from more than one run: see the runs table.")
    return section
