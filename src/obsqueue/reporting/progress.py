"""The main job's live display: one row per step (engine, step, test, done/left, elapsed).

Each step is a subprocess whose output lines are fed to :meth:`Step.feed`: pytest's ``-v``
lines give the tests done out of those collected; other tools' last line is shown as it is.
Off a terminal (CI logs) the display prints one line per finished step instead of redrawing.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["Display", "Step"]

COLLECTED = re.compile(r"collected (\d+) items?(?: / (\d+) deselected)?")
RESULT = re.compile(r"::(?P<test>\S+) (?P<status>PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)")
MODULE = re.compile(r"(?:^|/)test_(?P<module>\w+)\.py::")
STYLE = {"ok": "green", "failed": "red", "not measured": "yellow", "running": "cyan"}


@dataclass
class Step:
    """One subprocess of the main job and what its output said so far."""

    engine: str
    step: str
    status: str = "waiting"
    reason: str | None = None
    total: int | None = None
    done: int = 0
    failed: int = 0
    current: str = ""
    started: float | None = None
    finished: float | None = None
    tail: list[str] = field(default_factory=list)

    def feed(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        self.tail = [*self.tail[-19:], line]
        if (m := COLLECTED.search(line)) is not None:
            self.total = int(m.group(1)) - int(m.group(2) or 0)
        elif (m := RESULT.search(line)) is not None:
            self.done += 1
            self.failed += m.group("status") in ("FAILED", "ERROR")
            module = MODULE.search(line)
            area = module.group("module") if module else ""
            self.current = f"{area}: {m.group('test').split('[')[0]}"
        elif self.step != "conformance":
            self.current = line.strip()[-70:]

    @property
    def elapsed_s(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def as_record(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "step": self.step,
            "status": self.status,
            "reason": self.reason,
            "tests": self.done if self.step == "conformance" else None,
            "duration_s": round(self.elapsed_s, 1),
        }


class Display:
    """A rich Live table of every step, redrawn while the job runs."""

    def __init__(self, steps: list[Step], console: Console) -> None:
        self.steps, self.console = steps, console
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.live = Live(
            self.render(),
            console=console,
            refresh_per_second=2,
            auto_refresh=console.is_terminal,
            transient=False,
        )

    def render(self) -> Group:
        table = Table(expand=False, show_edge=False, pad_edge=False)
        for column in ("engine", "step", "status", "tests", "now", "elapsed"):
            wide = column == "now"
            table.add_column(
                column, no_wrap=wide, overflow="ellipsis", max_width=56 if wide else None
            )
        for s in self.steps:
            tests = f"{s.done}/{s.total}" if s.total else (str(s.done) if s.done else "")
            if s.failed:
                tests += f" ({s.failed} failed)"
            table.add_row(
                s.engine,
                s.step,
                Text(s.status, STYLE.get(s.status, "")),
                tests,
                s.reason if s.status in ("failed", "not measured") and s.reason else s.current,
                f"{s.elapsed_s:.0f} s" if s.started else "",
            )
        left = sum(s.status in ("waiting", "running") for s in self.steps)
        head = Text(
            f"obsqueue scorecard — {time.monotonic() - self.started:.0f} s, "
            f"{left} of {len(self.steps)} steps left"
        )
        return Group(head, table)

    def update(self) -> None:
        with self.lock:
            self.live.update(self.render())

    def finished(self, step: Step) -> None:
        if not self.console.is_terminal:
            why = f": {step.reason}" if step.reason else ""
            self.console.print(
                f"{step.engine} {step.step}: {step.status}{why} ({step.elapsed_s:.0f} s)",
                soft_wrap=True,
            )
        self.update()

    def __enter__(self) -> Display:
        if self.console.is_terminal:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.console.is_terminal:
            self.live.update(self.render())
            self.live.stop()
