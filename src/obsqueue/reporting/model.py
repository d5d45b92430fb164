"""What the report is made of: sections holding a table, charts and notes, rendered twice."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["Chart", "Section", "Table", "esc"]


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


@dataclass
class Table:
    """One table in two forms of the same shape: plain text (Markdown) and HTML markup."""

    md: pd.DataFrame
    html: pd.DataFrame

    @classmethod
    def plain(cls, frame: pd.DataFrame) -> Table:
        return cls(frame, frame.map(esc))


@dataclass
class Chart:
    """A chart written as PNG and SVG under ``charts/``, or the reason it could not be drawn."""

    name: str
    title: str
    png: Path | None = None
    svg: Path | None = None
    gap: str | None = None
    caption: str = ""


@dataclass
class Section:
    key: str
    title: str
    intro: str = ""
    table: Table | None = None
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: cells or charts not measured, each with where its value would come from
    missing: list[str] = field(default_factory=list)
