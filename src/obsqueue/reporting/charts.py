"""The charts (matplotlib, Agg): PNG and SVG under ``charts/``, or a gap saying what is missing.

* drained/s per engine beside its ceiling (and peers), per workload;
* throughput and p99 against sessions, consumers and backlog depth (schema-2 ``points``);
* end-to-end latency percentile curves (schema-2 ``histograms``, HdrHistogram);
* durability against speed: acknowledged messages lost per kill scenario (conformance history
  checker) against drained/s, one point per configuration;
* per-operation costs from the microbench (pytest-benchmark).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from obsqueue.reporting.decisions import kill_losses
from obsqueue.reporting.frames import Frames, wakeup_ms
from obsqueue.reporting.model import Chart
from obsqueue.reporting.performance import engine_speed

__all__ = ["draw_charts"]

SWEEPS = {"sessions": "sessions", "consumers": "consumer processes", "depth": "backlog depth"}
plt.rcParams.update({"svg.hashsalt": "obsqueue", "figure.dpi": 100, "font.size": 9})


def _save(fig: Figure, out: Path, name: str, title: str, caption: str) -> Chart:
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    # the bounding box of every artist, legends outside the axes included (tight_layout warns,
    # and pytest makes warnings errors, when a long legend cannot fit)
    fig.savefig(png, dpi=110, metadata={"Software": None}, bbox_inches="tight")
    fig.savefig(svg, metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)
    return Chart(name, title, png, svg, caption=caption)


def _gap(name: str, title: str, why: str) -> list[Chart]:
    return [Chart(name, title, gap=why)]


def _throughput(frames: Frames, out: Path) -> list[Chart]:
    bench = frames.bench
    if bench.empty or "drained_per_s" not in bench:
        return [Chart("throughput", "drained/s beside the ceiling", gap="no benchmark figures")]
    charts = []
    ok = bench[(bench["status"] == "ok") & bench["drained_per_s"].notna()]
    for workload, rows in ok.groupby("workload"):
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
        labels = [f"{r.engine}: {r.target}" for r in rows.itertuples()]
        colours = [
            {"engine": "#3465a4", "ceiling": "#888a85"}.get(str(k), "#f57900") for k in rows["kind"]
        ]
        ax.barh(labels, rows["drained_per_s"], color=colours)
        ax.invert_yaxis()
        if rows["drained_per_s"].max() > 50 * rows["drained_per_s"].min():
            ax.set_xscale("log")
        ax.set_xlabel("drained/s (blue: obsqueue engine, grey: raw ceiling, orange: peer)")
        name = f"throughput-{workload}"
        charts.append(_save(fig, out, name, f"drained/s, workload {workload}", "bench-*.json"))
    return charts


def _scaling(frames: Frames, out: Path) -> list[Chart]:
    points = frames.points
    charts = []
    for sweep, label in SWEEPS.items():
        rows = points[points["sweep"] == sweep] if not points.empty else points
        if rows.empty:
            charts.append(
                Chart(
                    f"scaling-{sweep}",
                    f"throughput and p99 against {label}",
                    gap=f"no '{sweep}' points in any benchmark result (schema 2)",
                )
            )
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
        for (engine, target), line in rows.groupby(["engine", "target"]):
            ordered = line.sort_values("value")
            left.plot(
                ordered["value"], ordered["drained_per_s"], marker="o", label=f"{engine}: {target}"
            )
            if "e2e_p99_ms" in ordered:
                right.plot(ordered["value"], ordered["e2e_p99_ms"], marker="o")
        left.set(xlabel=label, ylabel="drained/s")
        right.set(xlabel=label, ylabel="e2e p99 ms")
        left.legend(fontsize=7)
        charts.append(
            _save(fig, out, f"scaling-{sweep}", f"throughput and p99 against {label}", "points")
        )
    return charts


def _latency(frames: Frames, out: Path) -> list[Chart]:
    hist = frames.histograms
    rows = hist[hist["stage"] == "e2e"] if not hist.empty else hist
    if rows.empty:
        return _gap(
            "latency",
            "end-to-end latency percentiles",
            "no HdrHistogram percentiles in any benchmark result (schema 2)",
        )
    # one curve per engine (its own target); a backend's peers stand in its engines' rounds and
    # in the performance table, and would repeat once per engine here
    engines = rows[rows["target"] == "obsqueue"]
    rows = engines if not engines.empty else rows
    curves = rows.groupby(["engine", "target"])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for (engine, target), line in curves:
        ordered = line.sort_values("percentile")
        tail = 1 / (1 - ordered["percentile"].clip(upper=99.9999) / 100)
        label = str(engine) if target == "obsqueue" else f"{engine}: {target}"
        ax.plot(tail, ordered["ms"], label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([2, 10, 100, 1000, 10000], ["p50", "p90", "p99", "p99.9", "p99.99"])
    ax.set(ylabel="end-to-end ms")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + len(curves) // 16)
    return [_save(fig, out, "latency", "end-to-end latency percentiles", "histograms")]


def _durability(frames: Frames, out: Path) -> list[Chart]:
    speed, losses = engine_speed(frames), kill_losses(frames)
    both = [e for e in speed if e in losses]
    if not both:
        return _gap(
            "durability-vs-speed",
            "durability against speed",
            "needs an engine with both drained/s and conformance kill scenarios",
        )
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for engine in both:
        lost, runs = losses[engine]
        y = lost / runs
        ax.scatter(speed[engine], y, color="#cc0000" if lost else "#4e9a06")
        ax.annotate(
            engine, (speed[engine], y), textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    ax.set(xlabel="drained/s (benchmark)", ylabel="acknowledged messages lost per kill scenario")
    return [
        _save(
            fig,
            out,
            "durability-vs-speed",
            "durability against speed",
            "lost: conformance history checker; drained/s: benchmark",
        )
    ]


def _micro(frames: Frames, out: Path) -> list[Chart]:
    micro = frames.micro
    if micro.empty:
        return _gap(
            "microbench",
            "per-operation costs",
            "no microbench-*.json (pytest-benchmark, `nox -s microbench`)",
        )
    table = micro.pivot_table(index="group", columns="engine", values="median_us", aggfunc="median")
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(table) * max(1, len(table.columns) / 3) + 1.5))
    table.plot.barh(ax=ax)
    ax.set(xlabel="median µs per operation", ylabel="")
    ax.legend(fontsize=7)
    return [_save(fig, out, "microbench", "per-operation costs", "microbench-*.json")]


def _wakeup(frames: Frames, out: Path) -> list[Chart]:
    wake = wakeup_ms(frames)
    if not wake:
        return _gap("wakeup", "wakeup latency", "no P9 wakeup timings in the conformance results")
    engines = sorted(wake, key=lambda e: wake[e].get("p99", 0.0))
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(engines) + 1.2))
    ax.barh(engines, [wake[e].get("p99", 0.0) for e in engines], color="#3465a4", label="p99")
    ax.scatter(
        [wake[e].get("p50", 0.0) for e in engines], engines, color="#f57900", label="p50", zorder=3
    )
    ax.set_xscale("log")
    ax.set(xlabel="ms from enqueue in one process to delivery in a blocked consumer in another")
    ax.legend(fontsize=7)
    title = "wakeup latency (conformance P9)"
    return [_save(fig, out, "wakeup", title, "conformance-*.json timings")]


DRAWERS: list[Callable[[Frames, Path], list[Chart]]] = [
    _wakeup,
    _throughput,
    _durability,
    _scaling,
    _latency,
    _micro,
]


def draw_charts(frames: Frames, out: Path) -> list[Chart]:
    """Every chart, drawn into ``out``; a chart that cannot be drawn is a gap with its reason."""
    return [chart for draw in DRAWERS for chart in draw(frames, out)]
