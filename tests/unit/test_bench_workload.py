"""Workload files: the shipped ones load, bad ones are refused naming the file, key and reason;
the load generator's plans and stamps."""

from __future__ import annotations

from pathlib import Path

import pytest

from obsqueue.benchmarks.loadgen import draw_size, parse_stamp, plan_producers, stamp
from obsqueue.benchmarks.workload import (
    PROFILES,
    Payload,
    WorkloadError,
    load_workload,
    shipped_workloads,
)

GOOD = """
name = "mine"
measure = "throughput"
sessions = 6
messages_per_session = 5
producers = 2
consumers = 3
[arrival]
mode = "closed"
burst_min = 2
burst_max = 3
"""


def test_the_issue_s_workloads_are_shipped() -> None:
    assert {"drain", "sessions", "latency", "idle", "recovery", "scaling"} <= set(
        shipped_workloads()
    )


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", shipped_workloads())
def test_every_shipped_workload_loads_at_every_profile(name: str, profile: str) -> None:
    workload = load_workload(name, profile)
    assert workload.name == name
    assert workload.profile == profile


def test_sessions_is_the_real_shape() -> None:
    w = load_workload("sessions", "full")
    assert (w.sessions, w.consumers) == (100, 4)
    assert (w.payload.min_bytes, w.payload.max_bytes) == (1024, 16384)
    assert w.arrival.burst_max > w.arrival.burst_min


def test_quick_profile_overrides_keys_and_merges_tables() -> None:
    quick, full = load_workload("latency", "quick"), load_workload("latency", "full")
    assert quick.arrival.duration_s < full.arrival.duration_s
    assert quick.arrival.mode == full.arrival.mode == "rate"  # the rest of [arrival] is kept


def test_a_user_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    workload = load_workload(str(path))
    assert workload.total_messages == 30
    assert workload.source == str(path)


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ("colour = 1", "colour", "unknown key"),
        ("timeout_s = 0", "timeout_s", "must be > 0"),
        ("rounds = 'two'", "rounds", "must be an integer"),
        ("[payload]\nmin_bytes = 10\nmax_bytes = 5", "payload.max_bytes", ">= payload.min_bytes"),
        ("[payload]\ndistribution = 'zipf'", "payload.distribution", "must be one of"),
        ("[engine]\nspeed = 3", "engine.speed", "unknown key"),
        ("[latency]\nfractions = [0.5, 1.5]", "latency.fractions", "item 1"),
        ("[profile.huge]\nrounds = 9", "profile.huge", "unknown profile"),
        ("[profile.quick]\nsessions = -1", "profile.quick.sessions", "between 1"),
        ("warmup_messages = 30", "warmup_messages", "below the message count"),
        ("tool_use_ids = 'some'", "tool_use_ids", "must be one of"),
    ],
)
def test_a_bad_file_is_refused_with_file_key_and_reason(
    tmp_path: Path, extra: str, key: str, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    text = GOOD.replace("[arrival]", f"{extra}\n[arrival]") if "[" not in extra else GOOD + extra
    path.write_text(text)
    with pytest.raises(WorkloadError) as caught:
        load_workload(str(path))
    assert caught.value.source == str(path)
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(path) in str(caught.value)


def test_not_toml_and_unknown_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = ")
    with pytest.raises(WorkloadError, match="not valid TOML"):
        load_workload(str(path))
    with pytest.raises(WorkloadError, match="shipped: "):
        load_workload("no-such-workload")
    path.write_text('name = "x"')
    with pytest.raises(WorkloadError, match="measure: is required"):
        load_workload(str(path))


def test_stamps_round_trip_and_pad_to_size() -> None:
    text = stamp(123456789, True, 1000)
    assert len(text) == 1000
    assert parse_stamp(text) == (123456789, True)
    assert parse_stamp(stamp(5, False, 0)) == (5, False)
    with pytest.raises(ValueError, match="not a harness payload"):
        parse_stamp('{"x": 1}')


def test_payload_sizes_are_in_range_and_fixed_by_the_seed() -> None:
    import random

    spec = Payload("loguniform", 1024, 16384, 7)
    rng, rng_again = random.Random(7), random.Random(7)
    first = [draw_size(spec, rng) for _ in range(200)]
    again = [draw_size(spec, rng_again) for _ in range(200)]
    assert first == again
    assert all(1024 <= s <= 16384 for s in first)
    assert len(set(first)) > 1


def test_plans_split_sessions_between_producers_and_send_every_message(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    plans = plan_producers(load_workload(str(path)))
    sessions = [{s.session_id for s in p.sends} for p in plans]
    assert not sessions[0] & sessions[1]
    assert sum(len(p.sends) for p in plans) == 30
    for plan in plans:  # bursts of one session: 2 or 3 in a row (or the session's rest)
        assert all(s.offset_ns is None for s in plan.sends)


def test_unique_tool_use_ids_reach_the_producers_plans(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    assert not any(p.unique_keys for p in plan_producers(load_workload(str(path))))
    path.write_text(GOOD.replace("[arrival]", "tool_use_ids = 'unique'\n[arrival]"))
    assert all(p.unique_keys for p in plan_producers(load_workload(str(path))))


def test_an_open_loop_plan_keeps_to_the_rate(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(GOOD.replace('mode = "closed"', 'mode = "rate"\nduration_s = 2'))
    plans = plan_producers(load_workload(str(path)), rate_per_s=100)
    assert sum(len(p.sends) for p in plans) == 200
    offsets = [s.offset_ns for s in plans[0].sends]
    assert offsets == sorted(offsets)  # type: ignore[type-var]
    assert offsets[-1] is not None
    assert 1.8e9 < offsets[-1] < 2.0e9  # 100 sends at 50/s each: the last near 2 s
