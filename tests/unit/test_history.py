"""The operation history: the writer's lines, pairing, unknown outcomes, torn lines, round trips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from obsqueue.conformance.history import (
    INFO_TIME_NS,
    HistoryError,
    HistoryWriter,
    Op,
    complete_history,
    load_history,
    read_history_file,
    save_history,
)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[HistoryWriter]:
    with HistoryWriter(tmp_path, "p1") as w:
        yield w


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_invoke_and_ok_are_paired_by_op_id(tmp_path: Path, writer: HistoryWriter) -> None:
    op = writer.invoke("enqueue", {"session": "s1", "key": "k1", "tool_use_id": None})
    writer.ok(op, "enqueue", {"message_id": 7, "duplicate": False})
    invoke, ok = load_history(tmp_path)
    assert (invoke.phase, ok.phase) == ("invoke", "ok")
    assert invoke.op_id == ok.op_id == invoke.seq == op
    assert ok.seq > invoke.seq
    assert ok.time_ns >= invoke.time_ns
    assert invoke.value["key"] == "k1" and ok.value == {"message_id": 7, "duplicate": False}


def test_each_line_reaches_the_file_before_the_call_returns(writer: HistoryWriter) -> None:
    """No buffering in the process: what a SIGKILL would leave is already in the file."""
    writer.invoke("ack", {"key": "k1"})
    assert [d["phase"] for d in lines(writer.path)] == ["invoke"]


def test_event_logs_invoke_and_ok_at_one_time(tmp_path: Path, writer: HistoryWriter) -> None:
    writer.event("deliver", {"key": "k1", "attempt": 1})
    invoke, ok = load_history(tmp_path)
    assert (invoke.phase, ok.phase) == ("invoke", "ok")
    assert invoke.time_ns == ok.time_ns and invoke.op_id == ok.op_id
    assert ok.value == invoke.value


def test_call_logs_ok_with_what_the_body_adds(tmp_path: Path, writer: HistoryWriter) -> None:
    with writer.call("clear", {"session": "s1"}) as out:
        out["count"] = 3
    assert [(op.phase, op.value) for op in load_history(tmp_path)] == [
        ("invoke", {"session": "s1"}),
        ("ok", {"count": 3}),
    ]


def test_call_logs_fail_and_reraises(tmp_path: Path, writer: HistoryWriter) -> None:
    with pytest.raises(LookupError), writer.call("ack", {"key": "k1"}):
        raise LookupError("token 4 is stale")
    done = load_history(tmp_path)[-1]
    assert done.phase == "fail"
    assert done.value == {"error": "LookupError: token 4 is stale"}


@pytest.mark.parametrize("error", [TimeoutError("slow"), KeyboardInterrupt()])
def test_call_logs_info_when_the_outcome_is_open(
    tmp_path: Path, writer: HistoryWriter, error: BaseException
) -> None:
    with pytest.raises(type(error)), writer.call("ack", {"key": "k1"}, unknown=(TimeoutError,)):
        raise error
    done = load_history(tmp_path)[-1]
    assert done.phase == "info"
    assert done.value["error"].startswith(type(error).__name__)


def test_an_invoke_without_completion_gets_a_synthetic_info_at_the_end(
    tmp_path: Path, writer: HistoryWriter
) -> None:
    lost = writer.invoke("enqueue", {"key": "k1"})
    done = writer.invoke("enqueue", {"key": "k2"})
    writer.ok(done, "enqueue", {"message_id": 1, "duplicate": False})
    history = load_history(tmp_path)
    last = history[-1]
    assert (last.phase, last.op_id, last.f, last.time_ns) == ("info", lost, "enqueue", INFO_TIME_NS)
    assert last.seq > max(op.seq for op in history[:-1])
    assert [op.phase for op in history].count("info") == 1


def test_history_is_sorted_by_time_across_processes(tmp_path: Path) -> None:
    clock = iter([30, 10, 20, 40]).__next__
    a, b = HistoryWriter(tmp_path, "a", clock=clock), HistoryWriter(tmp_path, "b", clock=clock)
    a.event("deliver", {"key": "x"})  # t=30
    b.event("deliver", {"key": "y"})  # t=10
    a.event("deliver", {"key": "z"})  # t=20
    assert [(op.time_ns, op.process) for op in load_history(tmp_path)] == [
        (10, "b"),
        (10, "b"),
        (20, "a"),
        (20, "a"),
        (30, "a"),
        (30, "a"),
    ]


def test_torn_last_line_is_skipped(tmp_path: Path, writer: HistoryWriter) -> None:
    op = writer.invoke("ack", {"key": "k1"})
    writer.ok(op, "ack", {})
    with writer.path.open("a") as f:
        f.write('{"process":"p1","seq":2,"f":"ack","pha')
    assert [o.phase for o in load_history(tmp_path)] == ["invoke", "ok"]


def test_corrupt_line_in_the_middle_is_an_error(tmp_path: Path, writer: HistoryWriter) -> None:
    writer.event("deliver", {"key": "k1"})
    text = writer.path.read_text().splitlines()
    writer.path.write_text("\n".join([text[0], "{not json", text[1]]) + "\n")
    with pytest.raises(HistoryError, match=r"p1\.jsonl:2"):
        load_history(tmp_path)


def test_reopening_after_a_torn_write_truncates_and_continues(tmp_path: Path) -> None:
    """A restarted process with the same name neither collides with op ids nor glues a new
    line onto the torn one."""
    first = HistoryWriter(tmp_path, "c1")
    open_op = first.invoke("ack", {"key": "k1"})
    first.close()
    with first.path.open("a") as f:
        f.write('{"process":"c1","se')
    second = HistoryWriter(tmp_path, "c1")
    new_op = second.invoke("ack", {"key": "k2"})
    second.ok(new_op, "ack", {})
    second.close()
    assert new_op > open_op
    history = load_history(tmp_path)
    assert [(op.op_id, op.phase) for op in history] == [
        (open_op, "invoke"),
        (new_op, "invoke"),
        (new_op, "ok"),
        (open_op, "info"),
    ]


@pytest.mark.integration
def test_a_sigkilled_writer_leaves_a_loadable_history(tmp_path: Path) -> None:
    """A real child process writing as fast as it can, killed with SIGKILL mid-stream."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from obsqueue.conformance.history import HistoryWriter
        w = HistoryWriter(Path({str(tmp_path)!r}), "victim")
        i = 0
        while True:
            op = w.invoke("enqueue", {{"session": "s1", "key": f"k{{i}}", "pad": "x" * 5000}})
            if i == 20:
                print("ready", flush=True)
            w.ok(op, "enqueue", {{"message_id": i, "duplicate": False}})
            i += 1
    """)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
            time.sleep(0.05)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
    history = load_history(tmp_path)
    invokes = [op for op in history if op.phase == "invoke"]
    completions = {op.op_id: op.phase for op in history if op.phase != "invoke"}
    assert len(invokes) > 20
    assert sorted(completions) == [op.op_id for op in invokes]
    assert set(completions.values()) <= {"ok", "info"}


def test_threads_share_one_writer_safely(tmp_path: Path, writer: HistoryWriter) -> None:
    def work(n: int) -> None:
        for i in range(200):
            op = writer.invoke("ack", {"key": f"{n}-{i}"})
            writer.ok(op, "ack", {})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = load_history(tmp_path)
    assert len(history) == 1600
    assert len({op.seq for op in history}) == 1600
    assert all(op.phase != "info" for op in history)
    by_seq = sorted(history, key=lambda op: op.seq)
    assert [op.time_ns for op in by_seq] == sorted(op.time_ns for op in by_seq)


def test_save_and_read_round_trip(tmp_path: Path, writer: HistoryWriter) -> None:
    writer.event("deliver", {"key": "ключ-🔑", "nested": {"a": [1, None]}})
    writer.invoke("ack", {"key": "k"})
    history = load_history(tmp_path)
    saved = tmp_path / "saved" / "history.jsonl"
    saved.parent.mkdir()
    save_history(history, saved)
    assert read_history_file(saved) == history


def test_unknown_op_names_are_refused(writer: HistoryWriter) -> None:
    with pytest.raises(ValueError, match="enque"):
        writer.invoke("enque", {})


def test_completing_a_call_that_is_not_open_is_refused(writer: HistoryWriter) -> None:
    op = writer.invoke("ack", {})
    with pytest.raises(ValueError, match="not an open 'fail' call"):
        writer.ok(op, "fail", {})
    writer.ok(op, "ack", {})
    with pytest.raises(ValueError, match="not an open 'ack' call"):
        writer.ok(op, "ack", {})


def test_a_value_that_is_not_json_is_refused_and_nothing_written(writer: HistoryWriter) -> None:
    with pytest.raises(TypeError):
        writer.invoke("ack", {"when": object()})
    assert writer.path.read_text() == ""
    assert writer.invoke("ack", {}) == 0


def test_close_is_idempotent_and_final(writer: HistoryWriter) -> None:
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.invoke("ack", {})


@pytest.mark.parametrize("name", ["", "a/b", "..", ".hidden"])
def test_process_name_must_be_a_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="process"):
        HistoryWriter(tmp_path, name)


def _op(phase: str, op_id: int, seq: int) -> Op:
    return Op.from_json(
        {
            "process": "p",
            "seq": seq,
            "f": "ack",
            "phase": phase,
            "time_ns": seq,
            "value": {},
            "op_id": op_id,
        }
    )


def test_a_completion_without_invoke_is_an_error() -> None:
    with pytest.raises(HistoryError, match="without an invoke"):
        complete_history([_op("ok", 5, 6)])


def test_a_call_completed_twice_is_an_error() -> None:
    with pytest.raises(HistoryError, match="twice"):
        complete_history([_op("invoke", 0, 0), _op("ok", 0, 1), _op("fail", 0, 2)])


def test_a_record_with_a_bad_phase_is_an_error() -> None:
    with pytest.raises(HistoryError, match="phase"):
        _op("done", 0, 0)
