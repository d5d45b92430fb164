"""Shared settings for the project's own tests."""

from __future__ import annotations

import os

import pytest

IN_CI = bool(os.environ.get("CI"))


def require_binary(found: str | None, what: str) -> None:
    """Skip when a server binary is missing on a laptop; in CI a missing server is a failure."""
    if found:
        return
    if IN_CI:
        pytest.fail(f"{what} is not installed, and CI must run these tests")
    pytest.skip(f"{what} is not installed here (these tests run in CI)")
