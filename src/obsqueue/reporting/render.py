"""Write the sections as ``scorecard.md`` and a self-contained ``scorecard.html``.

The HTML page needs nothing from the network: its style is inline and every chart is embedded
as a ``data:`` PNG (the SVG and PNG files under ``charts/`` are for other documents).
"""

from __future__ import annotations

import base64
from importlib import resources
from pathlib import Path

import pandas as pd

from obsqueue.reporting.model import Chart, Section, esc

__all__ = ["render_html", "render_markdown"]


def _css() -> str:
    return resources.files("obsqueue.reporting").joinpath("scorecard.css").read_text("utf-8")


def _md_table(frame: pd.DataFrame) -> str:
    clean = frame.map(lambda v: str(v).replace("|", "\\|").replace("\n", " "))
    return str(clean.to_markdown(index=False))


def _md_section(section: Section, charts_rel: str) -> list[str]:
    out = [f"## {section.title}", ""]
    if section.intro:
        out += [section.intro, ""]
    if section.table is not None:
        out += [_md_table(section.table.md), ""]
    for note in section.notes:
        out += [f"* {note}" if section.key == "whom" else f"> {note}", ""]
    for chart in section.charts:
        if chart.png is not None:
            out += [f"![{chart.title}]({charts_rel}/{chart.png.name})", ""]
        else:
            out += [f"*{chart.title}: not drawn — {chart.gap}*", ""]
    return out


def render_markdown(title: str, header: list[str], sections: list[Section], path: Path) -> Path:
    lines = [f"# {title}", "", *header, ""]
    for section in sections:
        lines += _md_section(section, "charts")
    path.write_text("\n".join(lines).rstrip() + "\n", "utf-8")
    return path


def _img(chart: Chart) -> str:
    if chart.png is None:
        return f'<p class="missing">{esc(chart.title)}: not drawn — {esc(chart.gap)}</p>'
    data = base64.b64encode(chart.png.read_bytes()).decode()
    return (
        f'<figure><img class="chart" alt="{esc(chart.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(chart.title)} — {esc(chart.caption)}</figcaption></figure>"
    )


def _html_section(section: Section) -> str:
    parts = [f'<section id="{esc(section.key)}"><h2>{esc(section.title)}</h2>']
    if section.intro:
        parts.append(f'<p class="note">{esc(section.intro)}</p>')
    if section.table is not None:
        parts.append(section.table.html.to_html(index=False, escape=False, border=0))
    if section.notes:
        items = "".join(f"<li>{_strong(esc(n))}</li>" for n in section.notes)
        parts.append(f"<ul>{items}</ul>")
    parts += [_img(chart) for chart in section.charts]
    parts.append("</section>")
    return "\n".join(parts)


def _strong(text: str) -> str:
    """``**x**`` -> ``<strong>x</strong>`` (the only Markdown the notes use)."""
    pieces = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(pieces))


def render_html(title: str, header: list[str], sections: list[Section], path: Path) -> Path:
    head = "".join(f"<p>{_strong(esc(line))}</p>" for line in header)
    body = "\n".join(_html_section(s) for s in sections)
    path.write_text(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{_css()}</style></head>"
        f"<body><h1>{esc(title)}</h1>{head}\n{body}\n</body></html>\n",
        "utf-8",
    )
    return path
