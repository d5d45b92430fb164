"""Ctrl-C in the middle of a run: `obsqueue bench` exits 130, writes no result, and leaves no
worker process and no throwaway server behind."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import require_binary

pytestmark = pytest.mark.integration

LONG = """
name = "long"
measure = "throughput"
sessions = 4
messages_per_session = 100000
consumers = 2
rounds = 1
timeout_s = 600
[arrival]
mode = "closed"
"""


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_ctrl_c_stops_workers_and_the_throwaway_server(tmp_path: Path) -> None:
    require_binary(shutil.which("redis-server"), "redis-server")
    (tmp_path / "long.toml").write_text(LONG)
    command = [sys.executable, "-m", "obsqueue.cli", "bench", "-q", "-w", "long.toml"]
    proc = subprocess.Popen(
        [*command, "--results", "res", "redis://"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the signal goes to the harness alone, not its whole group
    )
    try:
        deadline = time.monotonic() + 60
        seen: list[psutil.Process] = []
        while time.monotonic() < deadline:
            seen = _descendants(proc.pid)
            names = [p.name() for p in seen]
            if "redis-server" in " ".join(names) and len(seen) >= 5:
                break
            time.sleep(0.5)
        assert any("redis-server" in p.name() for p in seen), "no throwaway server started"
        time.sleep(2)  # workers are sending and draining
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    time.sleep(0.5)
    alive = [p for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.name()) for p in alive]
    results = tmp_path / "res"
    assert not results.exists() or not list(results.glob("*.json"))
