"""Load named SQL sections from ``engines/sql/*.sql`` (procrastinate's layout).

A file holds sections, each opened by a header line ``-- name --``; the text up to the next header
is that query, stripped. Comment lines inside a section stay part of it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

__all__ = ["load_queries", "parse_queries"]

_HEADER = re.compile(r"^--\s*([a-z_][a-z0-9_]*)\s*--\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split ``text`` into ``{name: query}``; text before the first header is ignored."""
    matches = list(_HEADER.finditer(text))
    queries: dict[str, str] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following is not None else len(text)
        name = match.group(1)
        if name in queries:
            raise ValueError(f"SQL section {name!r} appears twice")
        queries[name] = text[match.end() : end].strip()
    return queries


@cache
def load_queries(filename: str) -> dict[str, str]:
    """The sections of ``obsqueue/engines/sql/<filename>``, parsed once per process."""
    text = resources.files("obsqueue.engines").joinpath("sql", filename).read_text("utf-8")
    return parse_queries(text)
