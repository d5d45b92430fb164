"""Installed size of an engine's Python dependencies, measured from ``RECORD`` files.

The extra that installs an engine's driver (``obsqueue[postgres]``) is read from obsqueue's own
metadata; its requirements are followed through every installed distribution (with their own
extras and environment markers), and each distribution's files listed in its ``RECORD`` are
summed — the size ``RECORD`` states, else the file's size on disk. obsqueue itself and the
standard library are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["Footprint", "directory_bytes", "distribution_bytes", "extra_footprint"]

SELF = "obsqueue"


@dataclass
class Footprint:
    """What ``pip install 'obsqueue[extra]'`` adds to an environment, measured here."""

    extra: str | None
    distributions: dict[str, int] = field(default_factory=dict)  # name -> bytes
    missing: list[str] = field(default_factory=list)  # required but not installed
    #: Installed folders outside Python's that the engine needs (a Node engine's node_modules),
    #: as ``{path: bytes}``; the runtimes themselves (node) are not counted.
    folders: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.distributions.values()) + sum(self.folders.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "extra": self.extra,
            "total_bytes": self.total_bytes,
            "distributions": dict(sorted(self.distributions.items())),
            "missing": sorted(self.missing),
            "folders": dict(sorted(self.folders.items())),
            "source": "installed distributions' RECORD files (importlib.metadata)",
        }


def distribution_bytes(dist: metadata.Distribution) -> int:
    """Bytes of every file a distribution's RECORD lists."""
    total = 0
    for entry in dist.files or ():
        if entry.size is not None:
            total += entry.size
            continue
        located = Path(str(dist.locate_file(entry)))
        if located.is_file():
            total += located.stat().st_size
    return total


def _requirements(dist_name: str, extras: frozenset[str]) -> list[Requirement]:
    found = []
    for line in metadata.requires(dist_name) or ():
        req = Requirement(line)
        wanted = extras or {""}
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
            found.append(req)
    return found


def directory_bytes(folder: Path) -> int:
    """The size of every regular file under ``folder`` (links not followed)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def extra_footprint(extra: str | None) -> Footprint:
    """The dependency closure of ``obsqueue[extra]`` (nothing for ``None``) and its size."""
    result = Footprint(extra)
    if extra is None:
        return result
    pending = [r for r in _requirements(SELF, frozenset({extra})) if canonicalize_name(r.name)]
    seen: set[str] = set()
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        if name == SELF:
            pending += _requirements(SELF, frozenset(req.extras))
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            result.missing.append(req.name)
            continue
        if name not in result.distributions:
            result.distributions[name] = distribution_bytes(dist)
        pending += _requirements(req.name, frozenset(req.extras))
    return result
