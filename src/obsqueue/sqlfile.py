"""Load named SQL sections from a package's ``.sql`` files (procrastinate's layout).

A file holds sections, each opened by a header line ``-- name --``; the text up to the next header
is that query, stripped. Comment lines inside a section stay part of it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

__all__ = ["load_queries", "parse_queries"]

_HEADER = re.compile(r"^--[ \t]*([a-z_][a-z0-9_]*)[ \t]*--[ \t\r]*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split ``text`` into ``{name: query}``; text before the first header is ignored."""
    matches = list(_HEADER.finditer(text))
    queries: dict[str, str] = {}
    ends = [m.start() for m in matches[1:]] + [len(text)] * bool(matches)
    for match, end in zip(matches, ends, strict=True):
        name = match.group(1)
        if name in queries:
            raise ValueError(f"SQL section {name!r} appears twice")
        queries[name] = text[match.end() : end].strip()
    return queries


@cache
def load_queries(package: str, *path: str) -> dict[str, str]:
    """The sections of the file at ``path`` inside ``package``, parsed once per process, e.g.
    ``load_queries("obsqueue.engines.sqlite", "queries.sql")``."""
    text = resources.files(package).joinpath(*path).read_text("utf-8")
    return parse_queries(text)
