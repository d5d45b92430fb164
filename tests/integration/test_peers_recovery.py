"""What each ceiling and peer does with the message of a consumer SIGKILLed in the middle of it:
a target that claims ``survives_consumer_kill`` delivers it again to another consumer (with its
library's recovery period shortened to 2 s through ``options["recovery_s"]``); one that does not
claim it does not deliver it again, and one without ``ack_after_processing`` no longer has it;
``prepare`` (run before every run) then leaves nothing of it pending.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from obsqueue.benchmarks.peers import BY_BACKEND
from obsqueue.benchmarks.targets import WorkloadTarget
from obsqueue.cli import main
from obsqueue.results import read_results
from obsqueue.servers import ServerHandle
from tests.integration.test_peers_targets import (  # the same throwaway servers' fixtures
    _target,
    postgres_server,  # noqa: F401
    redis_server,  # noqa: F401
)

pytestmark = pytest.mark.integration

SPAWN = multiprocessing.get_context("spawn")
RECOVERY_S = 2.0
PICKUP_S = 3.0  # time the doomed consumer gets to take the message
REDELIVERY_WINDOW_S = 30.0  # a target that survives a kill delivers again within this
ABSENCE_WINDOW_S = 8.0  # a target that does not is watched this long
MIN_RECOVERY_S = 0.5  # a redelivery sooner than this came from a message never held


def _doomed_consumer(target: WorkloadTarget) -> None:
    """A consumer in a process group of its own (RQ's work horse is killed with it), whose
    every message takes a minute."""
    os.setsid()
    target.open().consume(["s0"], lambda session, payload: None, threading.Event())


def _deliveries_within(target: WorkloadTarget, window_s: float) -> list[tuple[str, str]]:
    """Run a consumer for up to ``window_s`` (less once something arrives)."""
    seen: list[tuple[str, str]] = []
    stop = threading.Event()

    def on_message(session_id: str, payload: str) -> None:
        seen.append((session_id, payload))
        stop.set()

    session = target.open()
    timer = threading.Timer(window_s, stop.set)
    timer.start()
    try:
        session.consume(["s0"], on_message, stop)
    finally:
        timer.cancel()
        session.close()
    return seen


ALL = [cls.name for classes in BY_BACKEND.values() for cls in classes]


@pytest.mark.parametrize("name", ALL)
def test_a_consumer_killed_mid_message(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    base = _target(name, request, tmp_path)
    slow = dataclasses.replace(
        base, options={**base.options, "work_s": 60.0, "recovery_s": RECOVERY_S}
    )
    healthy = dataclasses.replace(base, options={**base.options, "recovery_s": RECOVERY_S})
    guarantees = type(base).guarantees
    base.prepare()
    try:
        producer = base.open()
        producer.enqueue("s0", '{"i": 0}')
        doomed = SPAWN.Process(target=_doomed_consumer, args=(slow,), daemon=True)
        doomed.start()
        time.sleep(PICKUP_S)
        assert doomed.is_alive(), "the consumer ended before it was killed"
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.join(timeout=30)
        if not guarantees.ack_after_processing:
            assert producer.pending() == 0, "the message was still stored: it was not taken"
        producer.close()

        window = REDELIVERY_WINDOW_S if guarantees.survives_consumer_kill else ABSENCE_WINDOW_S
        started = time.monotonic()
        seen = _deliveries_within(healthy, window)
        if guarantees.survives_consumer_kill:
            assert seen == [("s0", '{"i": 0}')]
            # at once would mean the killed consumer never held it: the test would prove nothing
            assert time.monotonic() - started > MIN_RECOVERY_S
        else:
            assert seen == [], "delivered again, yet the target does not claim to survive a kill"
        # the harness prepares a target before every run: nothing of the killed run is left
        base.prepare()
        after = base.open()
        try:
            assert after.pending() == 0, "prepare left the killed consumer's message pending"
        finally:
            after.close()
    finally:
        base.cleanup()


def test_the_recovery_workload_times_each_peer_at_the_engines_lease(
    redis_server: ServerHandle,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Given the harness's ``recovery`` workload on Redis (lease 2 s), when it runs the engine
    beside the ceiling and peers, then every target that claims to survive a consumer kill is
    timed at that period (its library's ``recovery_s``), and every other one says it lost the
    message as it declares — none is waited for past the window at its library's default."""
    options = ["-q", "-w", "recovery", "--profile", "quick", "--rounds", "1"]
    assert main(["bench", *options, "--results", str(tmp_path), redis_server.url]) == 0
    doc = read_results(tmp_path / "bench-redis-recovery.json", "benchmark")
    entries = {e["name"]: e for e in doc["rounds"][0]["targets"]}
    for cls in BY_BACKEND["redis"]:
        assert doc["targets"][cls.name]["options"]["recovery_s"] == RECOVERY_S
        entry = entries[cls.name]
        assert entry["status"] == "ok", entry
        if cls.guarantees.survives_consumer_kill:
            assert MIN_RECOVERY_S < entry["figures"]["recovery_s"] < 3 * RECOVERY_S + 10
        else:
            assert "recovery_s" not in entry["figures"]
            assert any("as the target declares" in note for note in entry["notes"]), entry
