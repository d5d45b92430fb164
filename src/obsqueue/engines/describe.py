"""Helpers for ``describe()``: what an engine reports about the libraries it runs on."""

from __future__ import annotations

from importlib import metadata

__all__ = ["installed_version"]


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
