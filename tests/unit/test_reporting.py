"""The scorecard generator on the committed results and on fixtures: every cell comes from the
JSON, bad input becomes a named gap, runs are never mixed silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from obsqueue.reporting.build import build_report
from obsqueue.reporting.frames import build_frames
from obsqueue.reporting.load import ReportInputError, load_results
from obsqueue.reporting.whom import whom_section

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "reports" / "results"
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A copy of the committed results, to add files to."""
    target = tmp_path / "results"
    shutil.copytree(COMMITTED, target)
    return target


def _doc(results: Path, name: str) -> dict:
    return json.loads((results / name).read_text())


def test_committed_results_load_without_gaps() -> None:
    loaded = load_results(COMMITTED)
    assert loaded.gaps == []
    assert len(loaded.of("conformance")) == len(list(COMMITTED.glob("conformance-*.json")))
    assert len(loaded.of("benchmark")) == len(list(COMMITTED.glob("bench-*.json")))


def test_matrix_cells_are_the_json_outcomes_with_anomaly_counts(
    results: Path, tmp_path: Path
) -> None:
    report = build_report(results, tmp_path / "out")
    assert report.matrix is not None
    row = report.matrix.set_index("engine").loc["redis-none"]
    doc = _doc(results, "conformance-redis-none.json")
    p4 = next(p for p in doc["properties"] if p["id"] == "P4")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(p4["anomalies"].items()))
    assert row["P4"].startswith(f"{p4['outcome']} ({counts})")
    assert "#why-redis-none-P4" in row["P4"]
    html = report.html.read_text()
    assert 'id="why-redis-none-P4"' in html
    assert 'class="cell o-expected-fail"' in html


def test_partial_and_unknown_outcomes_are_shown_by_name(results: Path, tmp_path: Path) -> None:
    doc = _doc(results, "conformance-sqlite.json")
    doc["schema_version"] = 2
    doc["properties"][3] |= {"outcome": "partial", "reason": "1 passed; 1 could not apply: X"}
    doc["properties"][4] |= {"outcome": "weird-new-outcome", "reason": "from a newer suite"}
    (results / "conformance-sqlite.json").write_text(json.dumps(doc))
    report = build_report(results, tmp_path / "out")
    assert report.matrix is not None
    row = report.matrix.set_index("engine").loc["sqlite"]
    assert row["P4"].startswith("partial") and row["P5"].startswith("weird-new-outcome")
    html = report.html.read_text()
    assert "o-partial" in html and "o-other" in html
    assert "1 could not apply: X" in report.markdown.read_text()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not readable JSON"),
        (
            '{"schema_version": 99, "kind": "conformance", "engine": "x", "properties": []}',
            "schema_version 99 is not one this report reads",
        ),
        ('{"schema_version": 1, "kind": "telemetry"}', "unknown kind 'telemetry'"),
        ('{"schema_version": 1, "kind": "conformance", "engine": "x"}', "without properties"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_bad_files_become_named_gaps(
    results: Path, tmp_path: Path, content: str, reason: str
) -> None:
    (results / "conformance-broken.json").write_text(content)
    report = build_report(results, tmp_path / "out")
    assert [g for g in report.gaps if g.startswith("conformance-broken.json: ")]
    assert reason in " ".join(report.gaps)
    assert "conformance-broken.json" in report.markdown.read_text()


def test_missing_or_empty_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportInputError, match="obsqueue scorecard"):
        load_results(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportInputError, match="holds no results JSON"):
        load_results(tmp_path / "empty")


def test_schema_2_benchmarks_fill_the_performance_table_and_charts(
    results: Path, tmp_path: Path
) -> None:
    for f in (FIXTURES / "results-v2").glob("*.json"):
        shutil.copy(f, results)
    report = build_report(results, tmp_path / "out")
    md = report.markdown.read_text()
    assert "huey-sqlite 1.50" in md  # ratio to the peer of the same round
    assert "no postgres server: initdb not found (fixture)" in md  # unavailable bench, with reason
    names = {p.stem for p in report.charts}
    assert {
        "scaling-sessions",
        "scaling-consumers",
        "scaling-depth",
        "latency",
        "microbench",
    } <= names
    workloads = {json.loads(f.read_text()).get("workload") for f in results.glob("bench-*.json")}
    assert {f"throughput-{w}" for w in workloads if w} | {"durability-vs-speed"} <= names
    for png in report.charts:
        assert png.read_bytes().startswith(b"\x89PNG") and png.with_suffix(".svg").is_file()


def test_results_of_two_machines_are_never_mixed_silently(results: Path, tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "results-v2" / "bench-sqlite-sessions.json", results)
    report = build_report(results, tmp_path / "out")
    md = report.markdown.read_text()
    assert "**Mixed runs:**" in md
    assert "Fixture CPU" in md and "| run" in md.replace("|:", "| ")


def test_html_is_self_contained(results: Path, tmp_path: Path) -> None:
    report = build_report(results, tmp_path / "out")
    html = report.html.read_text()
    assert "http://" not in html and "https://" not in html
    assert html.count('src="data:image/png;base64,') == len(report.charts) > 0


def test_who_should_use_what_follows_the_numbers(results: Path) -> None:
    def set_speed(label: str, drained_per_s: float) -> None:
        name = f"bench-{label}-sessions.json"
        doc = _doc(results, name)
        doc["summary"]["obsqueue"]["figures"]["drained_per_s"] = drained_per_s
        (results / name).write_text(json.dumps(doc))

    set_speed("sqlite", 1000.0)
    set_speed("huey-sqlite", 100.0)
    before = " ".join(whom_section(build_frames(load_results(results))).notes)
    assert "**A local-first tool or a laptop (no server to run):** sqlite" in before
    set_speed("huey-sqlite", 10_000.0)
    after = " ".join(whom_section(build_frames(load_results(results))).notes)
    assert "**A local-first tool or a laptop (no server to run):** huey-sqlite" in after
    lost = sum(
        p["anomalies"].get("lost", 0)
        for p in _doc(results, "conformance-redis-none.json")["properties"]
        if p["id"] in ("P4", "P5")
    )
    assert lost > 0
    assert f"redis-none lost {lost} acknowledged messages" in after


def test_unavailable_engine_shows_its_reason_in_the_decision_rows(
    results: Path, tmp_path: Path
) -> None:
    header = {"schema_version": 1, "engine": "dramatiq-amqp", "given": "dramatiq+amqp://"}
    reason = "no rabbitmq server: rabbitmq-server is not installed (test)"
    for kind in ("privacy", "facts"):
        doc = header | {"kind": kind, "status": "unavailable", "reason": reason}
        if kind == "facts":
            doc |= {"server_kind": "rabbitmq", "footprint": {"extra": "dramatiq", "total_bytes": 0}}
        (results / f"{kind}-dramatiq-amqp.json").write_text(json.dumps(doc))
    md = build_report(results, tmp_path / "out").markdown.read_text()
    row = next(
        line for line in md.splitlines() if line.startswith("| dramatiq-amqp ") and reason in line
    )
    assert f"not measured: unavailable: {reason}" in row
    assert "no: needs a rabbitmq server" in row


def test_microbench_figures_are_tabled_per_operation_and_engine(
    results: Path, tmp_path: Path
) -> None:
    shutil.copy(FIXTURES / "results-v2" / "microbench-engines.json", results)
    md = build_report(results, tmp_path / "out").markdown.read_text()
    section = md.split("## Per-operation costs (microbench)", 1)[1].split("## ", 1)[0]
    assert "operation (median µs)" in section
    claim = next(line for line in section.splitlines() if line.startswith("| claim_ack"))
    assert "150" in claim and "7.5" in claim  # sqlite 150 µs, memory 7.5 µs, from the JSON


def test_wakeup_figures_come_from_the_suite_timings(results: Path, tmp_path: Path) -> None:
    doc = _doc(results, "conformance-sqlite.json")
    timings = next(p for p in doc["properties"] if p["id"] == "P9")["timings"]
    p50, p99 = (
        1000 * v
        for k in ("wakeup_p50_s", "wakeup_p99_s")
        for name, v in timings.items()
        if "another_process" in name and name.endswith(k)
    )
    report = build_report(results, tmp_path / "out")
    lines = report.markdown.read_text().splitlines()
    row = next(x for x in lines if x.startswith("| sqlite ") and "(another process)" in x)
    assert f"{p50:.1f} / {p99:.1f} (another process)" in row
    assert "wakeup" in {p.stem for p in report.charts}


def test_a_node_engines_size_is_its_npm_packages_not_zero() -> None:
    from obsqueue.reporting.decisions import _size

    node = {
        "footprint": {
            "extra": None,
            "total_bytes": 3 * 2**20,
            "folders": {"/x/node/node_modules": 3 * 2**20},
        }
    }
    assert _size(node) == "3.0 MiB of npm packages (node/node_modules); Node.js itself not counted"
    assert _size({"footprint": {"extra": None, "total_bytes": 0}}) == "0 MiB: standard library only"
