"""Rounds, ratios within a round, the result document and its published schema, the durability
join — pure functions over plain data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from obsqueue.benchmarks.document import (
    ResultInvalidError,
    bench_schema,
    build_document,
    validate_document,
    write_document,
)
from obsqueue.benchmarks.durability import configs_for, conformance_join
from obsqueue.benchmarks.hist import new_histogram, percentile_figures, record_ns
from obsqueue.benchmarks.rounds import Entrant, RoundsResult, run_rounds
from obsqueue.benchmarks.traffic import Outcome
from obsqueue.benchmarks.workload import load_workload
from obsqueue.results import read_results, write_results


def _entrant(name: str, kind: str, figures: list[dict[str, float] | Exception]) -> Entrant:
    runs = iter(figures)

    def run(_workload: Any, _tick: Any) -> Outcome:
        got = next(runs)
        if isinstance(got, Exception):
            raise got
        return Outcome(figures=dict(got))

    return Entrant(name, kind, ("no dedupe",) if kind == "peer" else (), run)


def _no_progress(_description: str, _total: int) -> Any:
    return lambda _done, _total: None


def _rounds(entrants: list[Entrant], rounds: int = 2) -> RoundsResult:
    workload = load_workload("sessions", "quick")
    import dataclasses

    return run_rounds(entrants, dataclasses.replace(workload, rounds=rounds), _no_progress)


def test_ratios_are_taken_within_a_round_then_the_median() -> None:
    result = _rounds(
        [
            _entrant("obsqueue", "engine", [{"drained_per_s": 100}, {"drained_per_s": 300}]),
            _entrant("raw", "ceiling", [{"drained_per_s": 200}, {"drained_per_s": 300}]),
            _entrant("huey", "peer", [{"drained_per_s": 400}, {"drained_per_s": 100}]),
        ]
    )
    engine = result.summary["obsqueue"]
    # per round 0.5 and 1.0 -> median 0.75 (the ratio of the medians would be 200/250 = 0.8)
    assert engine["ratio_to_ceiling"] == {"median": 0.75, "min": 0.5, "max": 1.0}
    assert engine["ratio_to_peers"]["huey"] == {"median": 1.625, "min": 0.25, "max": 3.0}
    assert engine["figures"]["drained_per_s"] == 200
    assert engine["spread"]["drained_per_s"] == [100, 300]
    assert result.summary["huey"]["weaker"] == ["no dedupe"]
    assert result.summary["raw"]["ratio_to_ceiling"] is None


def test_a_failing_target_is_marked_in_its_round_and_the_others_still_run() -> None:
    result = _rounds(
        [
            _entrant("obsqueue", "engine", [{"drained_per_s": 100}, RuntimeError("server gone")]),
            _entrant("raw", "ceiling", [{"drained_per_s": 200}, {"drained_per_s": 100}]),
        ]
    )
    second = {e["name"]: e for e in result.rounds[1]["targets"]}
    assert second["obsqueue"]["status"] == "failed"
    assert "server gone" in second["obsqueue"]["reason"]
    assert second["raw"]["status"] == "ok"
    assert result.failure_of("obsqueue") == "round 2: RuntimeError: server gone"
    assert result.summary["obsqueue"]["rounds_ok"] == 1
    assert result.summary["obsqueue"]["ratio_to_ceiling"]["median"] == 0.5


def test_rounds_rotate_the_order_targets_run_in() -> None:
    ran: list[str] = []

    def entrant(name: str) -> Entrant:
        def run(_w: Any, _t: Any) -> Outcome:
            ran.append(name)
            return Outcome(figures={"drained_per_s": 1.0})

        return Entrant(name, "engine" if name == "a" else "peer", (), run)

    _rounds([entrant("a"), entrant("b"), entrant("c")], rounds=3)
    assert ran == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_a_figure_not_measured_is_absent_not_zero() -> None:
    assert percentile_figures(new_histogram(), "e2e") == {}
    hist = new_histogram()
    for ms in (1, 2, 3, 4, 100):
        record_ns(hist, ms * 1_000_000)
    figures = percentile_figures(hist, "e2e")
    assert figures["e2e_p50_ms"] == pytest.approx(3, rel=0.01)
    assert figures["e2e_max_ms"] == pytest.approx(100, rel=0.01)


def _document(status: str = "ok") -> dict[str, Any]:
    result = _rounds(
        [
            _entrant("obsqueue", "engine", [{"drained_per_s": 100}, {"drained_per_s": 110}]),
            _entrant("raw", "ceiling", [{"drained_per_s": 200}, {"drained_per_s": 210}]),
        ]
    )
    return build_document(
        engine="sqlite",
        url="postgresql://u:secret@h/db",
        workload=load_workload("sessions", "quick"),
        status=status,
        reason=None,
        rounds=result,
        durability={"synchronous": "FULL"},
    )


def test_a_document_validates_and_is_written_as_schema_2(tmp_path: Path) -> None:
    path = write_document(tmp_path, _document())
    assert path.name == "bench-sqlite-sessions.json"
    doc = read_results(path, "benchmark")
    assert doc["schema_version"] == 2
    assert "secret" not in doc["url"]
    assert doc["summary"]["obsqueue"]["ratio_to_ceiling"]["median"] == pytest.approx(0.5, 0.05)
    assert doc["workload_spec"]["name"] == "sessions"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("spoil", "where"),
    [
        (lambda d: d.update(status="meh"), "status"),
        (lambda d: d["summary"]["obsqueue"]["figures"].update(drained="fast"), "figures"),
        (lambda d: d["rounds"][0]["targets"][0]["figures"].update(speed=1.0), "figures"),
        (lambda d: d.pop("environment"), "environment"),
    ],
)
def test_an_invalid_document_is_refused_and_not_written(
    tmp_path: Path, spoil: Any, where: str
) -> None:
    doc = _document()
    spoil(doc)
    with pytest.raises(ResultInvalidError, match=where):
        write_document(tmp_path, doc)
    assert not list(tmp_path.iterdir())


def test_the_schema_is_published_in_the_package() -> None:
    schema = bench_schema()
    assert schema["properties"]["schema_version"] == {"const": 2}
    validate_document(_document("unavailable") | {"rounds": [], "summary": {}})


def test_the_sweep_covers_each_backend_s_durability_settings() -> None:
    assert [c.setting["synchronous"] for c in configs_for("sqlite://")] == ["OFF", "NORMAL", "FULL"]
    assert [c.suffix for c in configs_for("sqlite://")] == ["-sync-off", "-sync-normal", ""]
    assert [c.given for c in configs_for("postgresql://")] == [
        "postgresql://",
        "postgresql://?server_durability=async",
    ]
    assert [c.setting["appendfsync"] for c in configs_for("rq+redis://")] == [
        "always",
        "everysec",
        "no",
    ]
    assert [c.given for c in configs_for("memory://")] == ["memory://"]


def test_the_sqlite_sweep_runs_its_ceiling_and_peers_at_the_engine_s_level() -> None:
    from obsqueue.benchmarks.peers import targets_for

    for config in configs_for("sqlite:///tmp/q.db?busy_timeout_s=5"):
        level = config.setting["synchronous"]
        assert "busy_timeout_s=5" in config.given
        targets = targets_for(config.given, None, None)
        assert targets, config.given
        assert {t.options["synchronous"] for t in targets} == {level}, config.given


def _conformance(tmp_path: Path, label: str, durability: dict[str, str], lost: int) -> None:
    body = {
        "engine": label,
        "versions": {"durability": durability},
        "properties": [
            {"id": "P4", "outcome": "expected-fail", "anomalies": {"lost": lost}},
            {"id": "P5", "outcome": "pass", "anomalies": {}},
        ],
    }
    write_results(tmp_path / f"conformance-{label}.json", "conformance", body)


def test_the_join_reads_the_conformance_run_of_the_same_configuration(tmp_path: Path) -> None:
    _conformance(tmp_path, "redis-none", {"appendfsync": "no", "appendonly": "no"}, 318)
    joined = conformance_join(tmp_path, "redis-none", {"appendfsync": "no", "appendonly": "no"})
    assert joined["source"] == "conformance-redis-none.json"
    assert joined["lost"] == 318
    assert joined["P4"]["outcome"] == "expected-fail"


def test_the_join_refuses_a_conformance_run_of_another_configuration(tmp_path: Path) -> None:
    _conformance(tmp_path, "sqlite", {"synchronous": "FULL"}, 0)
    joined = conformance_join(tmp_path, "sqlite", {"synchronous": "OFF"})
    assert joined["source"] is None
    assert "synchronous" in joined["reason"]
    missing = conformance_join(tmp_path, "redis", {"appendfsync": "always"})
    assert "obsqueue conformance" in missing["reason"]
    assert json.dumps(missing)
