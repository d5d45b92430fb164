"""The main job's progress rows follow pytest's -v output: collected, done, failed, current."""

from __future__ import annotations

from obsqueue.reporting.progress import Step


def test_conformance_output_moves_the_row() -> None:
    step = Step("sqlite://", "conformance")
    step.feed("collected 92 items / 2 deselected\n")
    step.feed(".../suite/test_order.py::TestFifo::test_one_session[sqlite] PASSED   [  1%]\n")
    step.feed(".../suite/test_durability.py::TestX::test_acks[sqlite] FAILED   [  2%]\n")
    assert (step.total, step.done, step.failed) == (90, 2, 1)
    assert step.current == "durability: TestX::test_acks"
    assert step.as_record()["tests"] == 2


def test_other_tools_show_their_last_line() -> None:
    step = Step("redis://", "bench")
    step.feed("  drained 1800/2000\n")
    assert step.current == "drained 1800/2000" and step.total is None
