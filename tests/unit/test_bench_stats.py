"""Percentiles and the drain workload's checks."""

from __future__ import annotations

import pytest

from obsqueue.benchmarks.drain import DrainWorkload, run_drain
from obsqueue.benchmarks.references import reference_for
from obsqueue.benchmarks.stats import percentiles
from obsqueue.errors import InvalidMessageError


def test_nearest_rank_percentiles_of_a_hundred_samples() -> None:
    got = percentiles([i / 1000 for i in range(1, 101)])
    assert got == {
        "p50_ms": 50.0,
        "p90_ms": 90.0,
        "p99_ms": 99.0,
        "p99.9_ms": 100.0,
        "max_ms": 100.0,
    }


def test_no_samples_no_percentiles() -> None:
    assert percentiles([]) == {}


@pytest.mark.parametrize(("field", "value"), [("messages", 0), ("payload_bytes", -1)])
def test_workload_refuses_nonsense(field: str, value: int) -> None:
    with pytest.raises(InvalidMessageError, match=field):
        DrainWorkload(**{field: value})


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("postgresql://u@h/db", "postgres"),
        ("rq+redis://h:6379/0", "redis"),
        ("huey+sqlite:///q.db", "sqlite"),
        ("memory://", None),
    ],
)
def test_reference_follows_the_backend_of_the_scheme(url: str, backend: str | None) -> None:
    ref = reference_for(url, None)
    assert (ref.backend if ref else None) == backend


def test_memory_drain_counts_every_message() -> None:
    result = run_drain("memory://", DrainWorkload(messages=300, payload_bytes=10))
    figures = result["figures"]
    assert figures["enqueue_per_s"] > 0
    assert figures["drained_per_s"] > 0
    assert set(figures["service_time"]) == {"p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"}
    assert "reference" not in result
