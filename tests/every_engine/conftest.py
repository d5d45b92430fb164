"""Print the every-engine matrix at the end of the run, pass or fail."""

from __future__ import annotations

from typing import Any

import pytest

matrix_key = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    text = config.stash.get(matrix_key, None)
    if text:
        terminalreporter.write_sep("=", "conformance matrix of every shipped engine")
        for line in text.splitlines():
            terminalreporter.write_line(line)
