"""Which references stand beside an engine: every peer once per backend, the ceiling always."""

from __future__ import annotations

from obsqueue.benchmarks.lineup import lineup
from obsqueue.benchmarks.workload import load_workload
from obsqueue.results import peers_once_per_backend


def test_peers_run_beside_the_first_engine_of_each_backend_only() -> None:
    urls = ["memory://", "sqlite://", "redis://", "rq+redis://", "huey+sqlite://", "redis://?x=1"]
    assert peers_once_per_backend(urls) == {"memory://", "sqlite://", "redis://"}


def test_references_ceiling_keeps_only_the_raw_ceiling(tmp_path: object) -> None:
    workload = load_workload("sessions", "quick")
    every = lineup("sqlite:///x.db", None, f"{tmp_path}/ref.db", workload)
    ceiling = lineup("sqlite:///x.db", None, f"{tmp_path}/ref.db", workload, "ceiling")
    assert {t.kind for t in every.targets} == {"ceiling", "peer"}
    assert [t.kind for t in ceiling.targets] == ["ceiling"]
    assert ceiling.note is not None
    assert "only the raw ceiling ran" in ceiling.note


def test_the_main_job_starts_the_longest_suites_first() -> None:
    from obsqueue.reporting.job import longest_first

    urls = ["memory://", "sqlite://", "exec+bee-queue+redis://", "nosuch://"]
    assert longest_first(urls) == ["exec+bee-queue+redis://", "sqlite://", "memory://", "nosuch://"]
