"""The process protocol's own conformance: what the Python side does when the program misbehaves.

A small fake program (written to ``tmp_path``, run with this Python) speaks the protocol and
misbehaves on cue: a line that is not JSON, an answer without an id, an exit in the middle of a
call, a call never answered, a foreign protocol version, each contract error type. Every case
must end in the right contract error within bounded time — never a hang. The last tests check
that the engine program dies with its parent and is frozen with it (SIGKILL and SIGSTOP reach
it), on the Node example engine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from obsqueue.engines.base import Capability, PendingMessage
from obsqueue.engines.process.engine import ProcessEngine, Program, backend_url
from obsqueue.errors import (
    EngineClosedError,
    EngineUnavailableError,
    InvalidMessageError,
    StaleClaimError,
)
from tests.conftest import require_binary

pytestmark = pytest.mark.integration

FAKE = textwrap.dedent(
    """
    import json, os, sys, time
    mode = sys.argv[1]
    def answer(obj):
        sys.stdout.write(json.dumps(obj) + "\\n"); sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line); rid, op, args = req["id"], req["op"], req["args"]
        if op == "hello":
            protocol = 2 if mode == "version" else args["protocol"]
            caps = ["fifo", "dedupe"] if mode == "capabilities" else ["fifo"]
            hello = {"protocol": protocol, "engine": "fake", "capabilities": caps}
            answer({"id": rid, "ok": hello})
        elif op == "close":
            answer({"id": rid, "ok": None})
        elif op == "wait":
            time.sleep(args["wait_ms"] / 1000); answer({"id": rid, "ok": None})
        elif op == "pending_count":
            answer({"id": rid, "ok": 7 if mode != "shape" else "seven"})
        elif op == "enqueue":
            if mode == "garbage": sys.stdout.write("this is not json\\n"); sys.stdout.flush()
            elif mode == "no-id": answer({"ok": {"message_id": 1, "duplicate": False}})
            elif mode == "die": os._exit(3)
            elif mode == "silent": pass
            elif mode == "late":
                time.sleep(1.5); answer({"id": rid, "ok": {"message_id": 1, "duplicate": False}})
            elif mode.startswith("error:"):
                kind = mode.split(":", 1)[1]
                answer({"id": rid, "error": {"type": kind, "message": "told to", "field": "kind"}})
            else: answer({"id": rid, "ok": {"message_id": 1, "duplicate": False}})
        else:
            answer({"id": rid, "error": {"type": "EngineUnavailableError", "message": op}})
    if mode == "linger": time.sleep(60)
    """
)


class FakeEngine(ProcessEngine):
    scheme: ClassVar[str] = "exec+fake"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.FIFO})
    script: ClassVar[Path] = Path()
    mode: ClassVar[str] = "ok"

    def program(self) -> Program:
        return Program((sys.executable, str(self.script), self.mode))


@pytest.fixture
def open_fake(tmp_path: Path) -> Iterator[Any]:
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE)
    opened: list[ProcessEngine] = []

    def open_(mode: str, **options: Any) -> ProcessEngine:
        cls = type(f"Fake_{mode}", (FakeEngine,), {"script": script, "mode": mode})
        engine = cls("exec+fake://", call_timeout_s=options.pop("call_timeout_s", 2.0), **options)
        opened.append(engine)
        return engine

    yield open_
    for engine in opened:
        engine.close()


def _enqueue(engine: ProcessEngine) -> object:
    return engine.enqueue("s1", "cs", PendingMessage("observation", "t1", {"k": 1}))


def _within(seconds: float, call: Any, error: type[Exception]) -> Exception:
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    assert time.monotonic() - started < seconds
    return caught.value


class TestHandshake:
    def test_a_good_program_answers(self, open_fake: Any) -> None:
        engine = open_fake("ok")
        assert _enqueue(engine) is not None
        assert engine.get_pending_count("s1") == 7

    def test_a_foreign_protocol_version_is_refused_naming_both(self, open_fake: Any) -> None:
        err = _within(10, lambda: open_fake("version"), EngineUnavailableError)
        assert "protocol version 2" in str(err)
        assert "speaks 1" in str(err)

    def test_declared_capabilities_must_match_the_class(self, open_fake: Any) -> None:
        err = _within(10, lambda: open_fake("capabilities"), EngineUnavailableError)
        assert "dedupe" in str(err)

    def test_a_missing_program_is_unavailable(self) -> None:
        class Missing(FakeEngine):
            def program(self) -> Program:
                return Program(("/nonexistent/engine-program",))

        err = _within(5, lambda: Missing("exec+fake://"), EngineUnavailableError)
        assert "cannot start the engine program" in str(err)


class TestMisbehaviour:
    def test_a_line_that_is_not_json_breaks_the_engine_with_unavailable(
        self, open_fake: Any
    ) -> None:
        engine = open_fake("garbage")
        err = _within(5, lambda: _enqueue(engine), EngineUnavailableError)
        assert "not JSON" in str(err)
        # the stream is out of step: every later call fails fast too, and says why
        _within(2, lambda: engine.get_pending_count("s1"), EngineUnavailableError)

    def test_an_answer_without_an_id_breaks_the_engine(self, open_fake: Any) -> None:
        engine = open_fake("no-id")
        err = _within(5, lambda: _enqueue(engine), EngineUnavailableError)
        assert "without an integer id" in str(err)

    def test_a_program_that_dies_mid_call_gives_unavailable_with_its_exit_code(
        self, open_fake: Any
    ) -> None:
        engine = open_fake("die")
        err = _within(5, lambda: _enqueue(engine), EngineUnavailableError)
        assert "exited with code 3" in str(err)
        _within(2, engine.get_total_queue_depth, EngineUnavailableError)

    def test_a_program_that_never_answers_times_out_with_unknown_outcome(
        self, open_fake: Any
    ) -> None:
        engine = open_fake("silent", call_timeout_s=1.0)
        err = _within(4, lambda: _enqueue(engine), EngineUnavailableError)
        assert "outcome is unknown" in str(err)
        assert engine.get_pending_count("s1") == 7  # a slow call does not break the channel

    def test_a_late_answer_is_dropped_and_the_next_call_gets_its_own(self, open_fake: Any) -> None:
        engine = open_fake("late", call_timeout_s=0.5)
        _within(3, lambda: _enqueue(engine), EngineUnavailableError)
        time.sleep(1.5)  # the late answer to the enqueue arrives now
        assert engine.get_pending_count("s1") == 7

    def test_a_wrongly_shaped_answer_is_a_protocol_error(self, open_fake: Any) -> None:
        engine = open_fake("shape")
        err = _within(5, lambda: engine.get_pending_count("s1"), EngineUnavailableError)
        assert "broke the protocol" in str(err)

    def test_a_program_that_ignores_eof_is_killed_on_close(self, open_fake: Any) -> None:
        engine = open_fake("linger")
        pid = engine._channel.process.pid
        started = time.monotonic()
        engine.close()
        assert time.monotonic() - started < 12
        assert not _alive(pid)

    def test_calls_blocked_when_the_engine_closes_raise_closed(self, open_fake: Any) -> None:
        engine = open_fake("silent", call_timeout_s=30.0)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            blocked = pool.submit(_enqueue, engine)
            time.sleep(0.3)
            engine.close()
            with pytest.raises(EngineClosedError):
                blocked.result(timeout=15)


class TestErrors:
    @pytest.mark.parametrize(
        ("kind", "error"),
        [
            ("InvalidMessageError", InvalidMessageError),
            ("StaleClaimError", StaleClaimError),
            ("EngineUnavailableError", EngineUnavailableError),
            ("EngineClosedError", EngineClosedError),
            ("TypeError", EngineUnavailableError),
        ],
    )
    def test_each_error_type_maps_to_the_contract(
        self, open_fake: Any, kind: str, error: type[Exception]
    ) -> None:
        engine = open_fake(f"error:{kind}")
        raised = _within(5, lambda: _enqueue(engine), error)
        if isinstance(raised, InvalidMessageError):
            assert raised.field == "kind"
        assert "told to" in str(raised)


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "backend"),
        [
            ("exec+bullmq-node+redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
            ("exec+bee-queue+rediss://h/1", "rediss://h/1"),
            ("exec+example://", "exec+example://"),
        ],
    )
    def test_the_program_gets_the_backend_url(self, url: str, backend: str) -> None:
        assert backend_url(url) == backend


# ------------------------------------------------------------------ faults reach the program


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture
def node_example() -> str:
    require_binary(shutil.which("node"), "node (Node.js)")
    from obsqueue.engines.process import nodejs

    return nodejs.ExampleNodeEngine.scheme + "://"


PARENT = """
import sys, time
from obsqueue.engines import open_engine
engine = open_engine(sys.argv[1])
print(engine._channel.process.pid, flush=True)
time.sleep(120)
"""


def test_sigkill_of_the_python_side_leaves_no_program_running(node_example: str) -> None:
    """stdin EOF -> exit: a parent killed by SIGKILL (here alone, not its group) takes the
    program with it."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, node_example], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    program = int(parent.stdout.readline())
    assert _alive(program)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    parent.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(program) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(program)


def test_the_suites_sigstop_and_sigkill_reach_the_program(
    node_example: str, tmp_path: Path
) -> None:
    """faults.Child signals the worker's process group: the engine program is frozen and
    killed with the worker, so its heartbeats or lock renewals cannot hide a stall."""
    from obsqueue.conformance.faults import ChildError, start_child
    from obsqueue.conformance.spec import EngineSpec

    spec = EngineSpec(node_example, {"namespace": "tfaults"})
    stop_file = tmp_path / "stop"
    with start_child(
        "consume", spec, tmp_path / "c", "consumer", sessions=["s1"], stop_file=str(stop_file)
    ) as consumer:
        consumer.expect("ready", timeout_s=30)
        programs = _children(consumer.pid)
        assert programs, "the consumer started no engine program"
        program = programs[0]
        consumer.sigstop()
        time.sleep(0.2)
        assert _state(program) == "T"
        consumer.sigcont()
        time.sleep(0.2)
        assert _state(program) != "T"
        consumer.sigkill()
        deadline = time.monotonic() + 5
        while _alive(program) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(program)
    # faults.Child leaves its stdout pipe open: wait for its reader to see EOF, then close it
    with contextlib.suppress(ChildError):
        consumer.expect("end of output", timeout_s=5)
    assert consumer.process.stdout is not None
    consumer.process.stdout.close()
