"""The harness end to end: spawned producers and consumers, the self-check targets, failures
bounded by timeouts, no process left behind, and the CLI on real engines."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest

from obsqueue.benchmarks.null_target import DelayTarget, NullTarget
from obsqueue.benchmarks.rounds import entrant, run_rounds
from obsqueue.benchmarks.targets import Guarantees, OnMessage, TargetSession, WorkloadTarget
from obsqueue.benchmarks.traffic import run_traffic
from obsqueue.benchmarks.workload import Workload, load_workload
from obsqueue.cli import main
from obsqueue.results import read_results
from tests.conftest import require_binary

pytestmark = pytest.mark.integration

SMALL = """
name = "small"
measure = "throughput"
sessions = 8
messages_per_session = 25
producers = 2
consumers = 2
warmup_messages = 20
rounds = 1
timeout_s = 60
[payload]
distribution = "uniform"
min_bytes = 100
max_bytes = 2000
[arrival]
mode = "closed"
burst_min = 1
burst_max = 5
"""


def _small(tmp_path: Path, **changes: Any) -> Workload:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return dataclasses.replace(load_workload(str(path)), **changes)


def _workers() -> list[psutil.Process]:
    """This process's spawned workers still running (the resource tracker is not one)."""
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if any("spawn_main" in part for part in p.cmdline()) and p.is_running()
    ]


def _lines(_description: str, _total: int) -> Any:
    return lambda _done, _total: None


@dataclass(frozen=True)
class StuckTarget(WorkloadTarget):
    """Accepts messages and never delivers them: a hanging engine."""

    name: ClassVar[str] = "stuck"
    kind: ClassVar[str] = "engine"
    guarantees: ClassVar[Guarantees] = Guarantees(True, True, True, True, True)

    def prepare(self) -> None:
        pass

    def open(self) -> TargetSession:
        return StuckSession()


class StuckSession(TargetSession):
    def enqueue(self, session_id: str, payload: str, dedupe_key: str | None = None) -> None:
        pass

    def consume(
        self, sessions: Sequence[str] | None, on_message: OnMessage, stop: threading.Event
    ) -> None:
        time.sleep(3600)  # ignores stop: only a kill ends it

    def pending(self) -> int:
        return 0


def test_null_target_counts_every_message_across_processes(tmp_path: Path) -> None:
    target = NullTarget("null")
    target.prepare()
    outcome = run_traffic(target, _small(tmp_path))
    figures = outcome.figures
    assert figures["drained_per_s"] > 0
    assert figures["enqueue_per_s"] > 0
    assert figures["client_cpu_s_per_1000"] > 0
    assert figures["peak_rss_mib"] > 5
    assert "server_bytes_per_pending" not in figures  # not measured in closed loop
    assert {"e2e", "enqueue", "delivered", "processed"} <= set(outcome.histograms)
    assert not _workers()


def test_an_injected_delay_reads_back_at_p50(tmp_path: Path) -> None:
    target = DelayTarget("delay", options={"delay_ms": 20.0})
    target.prepare()
    workload = _small(tmp_path, arrival=dataclasses.replace(load_workload("latency").arrival))
    outcome = run_traffic(target, dataclasses.replace(workload), rate_per_s=200)
    assert outcome.figures["e2e_p50_ms"] == pytest.approx(20.0, abs=2.0)
    assert outcome.figures["send_delay_p99_ms"] < 20


def test_a_throughput_workload_with_a_rate_arrival_runs_open_loop(tmp_path: Path) -> None:
    """``[arrival] mode = "rate"`` in a throughput workload is the file's own offered rate,
    not ignored for a closed loop (it was, before)."""
    target = NullTarget("null")
    target.prepare()
    rate = dataclasses.replace(
        load_workload("latency").arrival, mode="rate", rate_per_s=100.0, duration_s=1.0
    )
    outcome = run_traffic(target, _small(tmp_path, arrival=rate, warmup_messages=0))
    assert "send_delay_p99_ms" in outcome.figures  # an open loop reports its send delay
    assert outcome.figures["enqueue_per_s"] < 150, outcome.figures  # closed loop: thousands


def test_a_hanging_target_fails_within_its_timeout_and_leaves_no_process(tmp_path: Path) -> None:
    workload = _small(tmp_path, timeout_s=3.0)
    null = NullTarget("null")
    started = time.monotonic()
    result = run_rounds([entrant(StuckTarget("nowhere")), entrant(null)], workload, _lines)
    assert time.monotonic() - started < 30
    entries = {e["name"]: e for e in result.rounds[0]["targets"]}
    assert entries["stuck"]["status"] == "failed"
    assert "timed out" in entries["stuck"]["reason"]
    assert entries["null"]["status"] == "ok"
    assert not _workers()


def test_recovery_after_a_consumer_sigkill_on_sqlite(tmp_path: Path) -> None:
    doc = _bench(tmp_path, "recovery", "sqlite://")
    figures = doc["summary"]["obsqueue"]["figures"]
    assert 1.9 < figures["recovery_s"] < 10  # lease_s = 2 in recovery.toml
    assert not _workers()


def _bench(tmp_path: Path, workload: str, *urls: str) -> dict[str, Any]:
    options = ["-q", "-w", workload, "--profile", "quick", "--rounds", "1"]
    code = main(["bench", *options, "--results", str(tmp_path), *urls])
    assert code == 0
    name = Path(workload).stem
    return read_results(tmp_path / f"bench-{urls[0].split(':')[0]}-{name}.json", "benchmark")


def test_cli_runs_a_user_workload_and_reports_an_in_process_engine_unavailable(
    tmp_path: Path,
) -> None:
    (tmp_path / "small.toml").write_text(SMALL)
    doc = _bench(tmp_path, str(tmp_path / "small.toml"), "sqlite://", "memory://")
    assert doc["status"] == "ok"
    assert doc["durability"]["synchronous"] == "FULL"
    assert doc["summary"]["obsqueue"]["figures"]["drained_per_s"] > 0
    assert doc["references"]["source"] or doc["references"]["note"]
    memory = read_results(tmp_path / "bench-memory-small.json", "benchmark")
    assert memory["status"] == "unavailable"
    assert "separate processes" in memory["reason"]
    assert not _workers()


def test_cli_refuses_a_bad_workload_file_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("rounds = 1", "rounds = 0"))
    assert main(["bench", "-q", "-w", str(bad), "sqlite://"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "rounds" in err


def test_drain_on_a_throwaway_redis(tmp_path: Path) -> None:
    require_binary(shutil.which("redis-server"), "redis-server")
    doc = _bench(tmp_path, "drain", "redis://")
    assert doc["durability"]["appendfsync"] == "always"
    assert doc["server"]["owned"] is True
    assert doc["summary"]["obsqueue"]["figures"]["server_bytes_per_pending"] > 0


def test_durability_sweep_runs_each_sqlite_level_and_joins_conformance(tmp_path: Path) -> None:
    (tmp_path / "small.toml").write_text(SMALL)
    options = ["-q", "-w", str(tmp_path / "small.toml"), "--durability-sweep"]
    assert main(["bench", *options, "--results", str(tmp_path), "sqlite://"]) == 0
    sweep = read_results(tmp_path / "bench-durability-sqlite-small.json", "benchmark-durability")
    points = sweep["points"]
    assert [p["setting"]["synchronous"] for p in points] == ["OFF", "NORMAL", "FULL"]
    for point in points:  # the level reached the engine: its live settings say so
        assert point["durability"]["synchronous"] == point["setting"]["synchronous"]
        assert point["figures"]["drained_per_s"] > 0
        assert point["conformance"]["source"] is None  # no conformance run in tmp_path
    assert (tmp_path / "bench-sqlite-sync-off-small.json").exists()


@pytest.mark.parametrize(("p99_target_ms", "holds"), [(5.0, False), (500.0, True)])
def test_the_rate_search_finds_a_rate_only_when_the_target_can_hold(
    tmp_path: Path, p99_target_ms: float, holds: bool
) -> None:
    from obsqueue.benchmarks.measure import measure

    latency = load_workload("latency")
    workload = _small(
        tmp_path,
        measure="latency",
        arrival=dataclasses.replace(latency.arrival, duration_s=1.0),
        latency={"fractions": [0.2], "p99_target_ms": p99_target_ms, "search_steps": 1},
    )
    outcome = measure(DelayTarget("delay", options={"delay_ms": 10.0}), workload, _lines("", 0))
    assert ("rate_at_p99_target_per_s" in outcome.figures) is holds
    assert [p["sweep"] for p in outcome.points] == ["offered_fraction", "search_fraction"]
    assert outcome.figures["e2e_p50_ms"] == pytest.approx(10.0, abs=1.5)
