"""Shared settings for the project's own tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import pytest

from obsqueue.servers import ServerUnavailableError

T = TypeVar("T")

IN_CI = bool(os.environ.get("CI"))


def require_binary(found: str | None, what: str) -> None:
    """Skip when a server binary is missing on a laptop; in CI a missing server is a failure."""
    if found:
        return
    if IN_CI:
        pytest.fail(f"{what} is not installed, and CI must run these tests")
    pytest.skip(f"{what} is not installed here (these tests run in CI)")


def throwaway(start: Callable[[], T], what: str) -> T:
    """Start a throwaway server; where none can be had, skip on a laptop and fail in CI."""
    try:
        return start()
    except ServerUnavailableError as exc:
        if IN_CI:
            pytest.fail(f"CI must run these tests: {exc}")
        pytest.skip(f"no throwaway {what}: {exc}")
