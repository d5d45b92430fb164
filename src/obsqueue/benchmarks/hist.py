"""Latency histograms (HdrHistogram, microsecond resolution, 3 significant digits).

Worker processes record into their own histograms and send them encoded; the parent merges them
per stage. Figures come out in milliseconds as floats.
"""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

__all__ = ["PERCENTILES", "Histogram", "decode_merge", "new_histogram", "percentile_figures"]

Histogram = HdrHistogram
#: The percentiles every stage reports, and the name suffix each gets.
PERCENTILES = ((50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p999"))
#: 1 µs to one hour.
HIGHEST_US = 3_600_000_000


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, 3)


def record_ns(hist: HdrHistogram, elapsed_ns: int) -> None:
    """Record a duration in nanoseconds (clamped to the histogram's range)."""
    hist.record_value(min(max(elapsed_ns // 1000, 1), HIGHEST_US))


def decode_merge(encoded: Iterable[bytes | str]) -> HdrHistogram:
    """One histogram holding every encoded histogram given."""
    merged = new_histogram()
    for item in encoded:
        merged.add(HdrHistogram.decode(item))
    return merged


def percentile_figures(hist: HdrHistogram, prefix: str) -> dict[str, float]:
    """``{prefix_p50_ms: …, prefix_p90_ms, prefix_p99_ms, prefix_p999_ms, prefix_max_ms}``; empty
    when nothing was recorded (a figure not measured is absent, never 0)."""
    if hist.get_total_count() == 0:
        return {}
    out = {
        f"{prefix}_{name}_ms": round(hist.get_value_at_percentile(p) / 1000, 3)
        for p, name in PERCENTILES
    }
    out[f"{prefix}_max_ms"] = round(hist.get_max_value() / 1000, 3)
    return out


def percentile_table(hist: HdrHistogram) -> list[list[float]]:
    """``[[percentile, ms], …]`` for the result's ``histograms`` section."""
    if hist.get_total_count() == 0:
        return []
    points = (0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0)
    return [[p, round(hist.get_value_at_percentile(p) / 1000, 3)] for p in points]
