"""Percentiles of a sample, in the form every results file uses."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentiles"]

POINTS = (50.0, 90.0, 99.0, 99.9)


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """``{"p50_ms": …, "p90_ms": …, "p99_ms": …, "p99.9_ms": …, "max_ms": …}`` by the
    nearest-rank method; an empty sample gives an empty dict."""
    if not samples_s:
        return {}
    ordered = sorted(samples_s)
    out = {}
    for point in POINTS:
        rank = max(1, math.ceil(point / 100 * len(ordered)))
        out[f"p{point:g}_ms"] = round(ordered[rank - 1] * 1000, 4)
    out["max_ms"] = round(ordered[-1] * 1000, 4)
    return out
