"""The decision-row probes on real stores: a canary payload searched for in the files each
backend writes, the dependency footprint from RECORD files, a throwaway server's processes."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from obsqueue.probes.footprint import distribution_bytes, extra_footprint
from obsqueue.probes.privacy import scan_for
from obsqueue.probes.run import probe_engine
from obsqueue.servers.redis import find_binary
from tests.conftest import throwaway

pytestmark = pytest.mark.integration


def test_sqlite_payload_is_plain_text_in_its_files(tmp_path: Path) -> None:
    out = probe_engine("sqlite://", tmp_path, commit="abc")
    privacy = out["privacy"]
    assert privacy["status"] == "ok" and privacy["plain_text"] is True
    assert any(name.startswith("queue.db") for name in privacy["found_in"])
    written = json.loads((tmp_path / "privacy-sqlite.json").read_text())
    assert written["kind"] == "privacy" and written["commit"] == "abc"
    facts = out["facts"]
    assert facts["server_kind"] is None and facts["server_processes"] is None
    assert facts["footprint"]["total_bytes"] == 0
    assert facts["durability"]["synchronous"] == "FULL"


def test_memory_engine_has_no_storage_files(tmp_path: Path) -> None:
    privacy = probe_engine("memory://", tmp_path, commit=None)["privacy"]
    assert privacy["plain_text"] is None and privacy["files_scanned"] == 0


def test_scan_finds_only_the_needle(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"xx obsq-canary-1 yy")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"nothing here")
    result = scan_for(b"obsq-canary-1", tmp_path, "test dir")
    assert result.found_in == ["a"] and result.files_scanned == 2 and result.plain_text is True
    assert scan_for(b"absent", tmp_path, "test dir").plain_text is False


def test_footprint_is_the_sum_of_record_sizes() -> None:
    size = extra_footprint("redis")
    assert {"redis", "hiredis"} <= set(size.distributions)
    assert (
        size.distributions["redis"] == distribution_bytes(metadata.distribution("redis")) > 100_000
    )
    assert size.total_bytes == sum(size.distributions.values())
    assert extra_footprint(None).total_bytes == 0


@pytest.mark.parametrize(
    ("url", "label", "readable"),
    [("redis://", "redis", True), ("redis://?server_durability=none", "redis-none", False)],
)
def test_redis_canary_is_in_the_aof_only_when_it_persists(
    tmp_path: Path, url: str, label: str, readable: bool
) -> None:
    throwaway(find_binary, "redis-server")
    out = probe_engine(url, tmp_path, commit=None)
    assert out["privacy"]["engine"] == label
    assert out["privacy"]["plain_text"] is readable
    if readable:
        assert any("aof" in name for name in out["privacy"]["found_in"])
    procs = out["facts"]["server_processes"]
    assert procs["programs"] == {"redis-server": 1}
