"""The live progress display (``rich``) on stderr: one line per target run, and log lines."""

from __future__ import annotations

from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from obsqueue.benchmarks.traffic import Tick

__all__ = ["LiveProgress"]


class LiveProgress:
    """``line(description)`` opens a progress line and returns its tick; ``log`` prints above.
    ``quiet`` hides the progress lines and keeps the log."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=quiet,
        )
        self.prefix = ""
        self._current: TaskID | None = None

    def line(self, description: str, total: int = 0) -> Tick:
        if self._current is not None:
            self.progress.update(self._current, visible=False)
        task = self.progress.add_task(f"{self.prefix}{description}", total=total or None)
        self._current = task

        def tick(done: int, total: int) -> None:
            self.progress.update(task, completed=done, total=total or None)

        return tick

    def log(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()
