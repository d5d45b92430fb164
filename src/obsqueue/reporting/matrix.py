"""The conformance matrix: engine by P1-P16, outcome per cell, anomaly counts, reasons linked."""

from __future__ import annotations

from typing import Any

import pandas as pd

from obsqueue.reporting.frames import Frames
from obsqueue.reporting.model import Section, Table, esc

__all__ = ["PROPERTIES", "engine_order", "matrix_section", "outcome_counts"]

PROPERTIES = [f"P{i}" for i in range(1, 17)]
#: Outcomes a cell may hold (docs/conformance.md); anything else is shown as it is, in grey.
GOOD = frozenset({"pass", "partial", "unsupported", "expected-fail"})
#: Short forms for narrow cells (the page's legend and each cell's tooltip give the full word).
SHORT = {"unsupported": "unsup", "expected-fail": "xfail", "fail": "FAIL", "partial": "part"}


def engine_order(frames: Frames) -> list[str]:
    """Embedded engines first, then by name."""
    rows = frames.engines.drop_duplicates("engine")
    key = {
        str(r.engine): (isinstance(r.server_kind, str), str(r.engine)) for r in rows.itertuples()
    }
    return sorted(key, key=lambda engine: key[engine])


def _anomalies(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)


def _anchor(engine: str, pid: str) -> str:
    return f"why-{engine}-{pid}"


def _cell(row: dict[Any, Any]) -> tuple[str, str]:
    outcome = str(row["outcome"])
    extra = _anomalies(row["anomalies"])
    expected = f"expects {row['expected']}" if row["expected"] else ""
    detail = "; ".join(x for x in (expected, extra) if x)
    md = outcome + (f" ({detail})" if detail else "")
    if outcome != "pass":
        md += f" [→](#{_anchor(row['engine'], row['id'])})"
    css = f"o-{outcome}" if outcome in GOOD | {"pass", "fail", "unknown"} else "o-other"
    short = esc(SHORT.get(outcome, outcome))
    inner = short + (f"<small>{esc(detail)}</small>" if detail else "")
    tip = esc(f"{outcome}: {row['reason']}")
    if outcome == "pass":
        return md, f'<span class="cell {css}" title="{tip}">{inner}</span>'
    link = f'href="#{_anchor(row["engine"], row["id"])}"'
    return md, f'<a class="cell {css}" {link} title="{tip}">{inner}</a>'


def outcome_counts(frames: Frames) -> dict[str, dict[str, int]]:
    """Per engine: how many properties ended with each outcome."""
    counts: dict[str, dict[str, int]] = {}
    for row in frames.properties.itertuples():
        per = counts.setdefault(str(row.engine), {})
        per[str(row.outcome)] = per.get(str(row.outcome), 0) + 1
    return counts


def matrix_section(frames: Frames) -> tuple[Section, Section]:
    """The matrix, and the reasons of every cell that is not a plain pass."""
    matrix = Section("matrix", "Conformance matrix: engine by property")
    reasons = Section("reasons", "Why each cell that is not a pass")
    props = frames.properties
    if props.empty:
        matrix.missing.append(
            "conformance matrix: no conformance-*.json readable (run `obsqueue conformance URL…`)"
        )
        return matrix, reasons
    md_rows, html_rows, why_md, why_html = [], [], [], []
    for engine in engine_order(frames):
        mine = {str(r["id"]): r for r in props[props.engine == engine].to_dict("records")}
        run = str(next(iter(mine.values()))["run"])
        md_row, html_row = {"engine": engine, "run": run}, {"engine": esc(engine), "run": run}
        for pid in PROPERTIES:
            if pid not in mine:
                md_row[pid] = html_row[pid] = "missing"
                matrix.missing.append(f"{engine} {pid}: not in its conformance results")
                continue
            row = mine[pid]
            md_row[pid], html_row[pid] = _cell(row)
            if row["outcome"] != "pass":
                why = {
                    "engine": engine,
                    "property": f"{pid} {row['title']}",
                    "outcome": row["outcome"],
                    "reason": row["reason"],
                }
                why_md.append(why)
                why_html.append(
                    why
                    | {"engine": f'<span id="{_anchor(engine, pid)}"></span>{esc(engine)}'}
                    | {k: esc(why[k]) for k in ("property", "outcome", "reason")}
                )
        md_rows.append(md_row)
        html_rows.append(html_row)
    md, htm = pd.DataFrame(md_rows), pd.DataFrame(html_rows)
    if md["run"].nunique() == 1:
        md, htm = md.drop(columns="run"), htm.drop(columns="run")
    else:
        matrix.notes.append(
            "Rows come from different runs (machine or commit): see the run column and the "
            "runs table."
        )
    matrix.table = Table(md, htm)
    titles = props.drop_duplicates("id").set_index("id")["title"].to_dict()
    legend = ", ".join(f"{short} = {word}" for word, short in SHORT.items())
    matrix.intro = f"Outcomes per property ({legend}; hover a cell for its reason): " + "; ".join(
        f"{pid} {titles.get(pid, '')}" for pid in PROPERTIES
    )
    if why_md:
        reasons.table = Table(pd.DataFrame(why_md), pd.DataFrame(why_html))
    return matrix, reasons


def terminal_matrix(md: pd.DataFrame) -> str:
    """The Markdown matrix as a compact terminal table: outcomes only, abbreviated."""

    def short(value: object) -> str:
        word = str(value).split(" ", 1)[0]
        return SHORT.get(word, word)

    cells = md.copy()
    for column in PROPERTIES:
        if column in cells:
            cells[column] = cells[column].map(short)
    return str(cells.to_string(index=False))
