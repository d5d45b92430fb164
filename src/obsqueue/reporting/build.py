"""``build_report``: a results directory in; ``scorecard.md``, ``.html`` and ``charts/`` out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from obsqueue.reporting.charts import draw_charts
from obsqueue.reporting.decisions import decisions_section, glue_section
from obsqueue.reporting.frames import Frames, build_frames
from obsqueue.reporting.load import load_results
from obsqueue.reporting.matrix import matrix_section
from obsqueue.reporting.model import Section, Table
from obsqueue.reporting.performance import micro_section, performance_section
from obsqueue.reporting.render import render_html, render_markdown
from obsqueue.reporting.whom import whom_section

__all__ = ["Report", "build_report"]

TITLE = "obsqueue scorecard"


@dataclass
class Report:
    markdown: Path
    html: Path
    charts: list[Path] = field(default_factory=list)
    matrix: pd.DataFrame | None = None
    gaps: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _job_lines(frames: Frames) -> list[str]:
    job = frames.job
    if job is None:
        return [
            "No `obsqueue scorecard` run record (scorecard-run.json): the results were "
            "written by separate commands."
        ]
    return [
        f"Main job: `{job.get('command', 'obsqueue scorecard')}` started {job.get('started_at')}, "
        f"wall time {float(job.get('wall_s') or 0):.0f} s, "
        f"commit {job.get('commit') or 'not recorded'}."
    ]


def _runs_section(frames: Frames) -> Section:
    section = Section("runs", "Where the results come from")
    rows = frames.runs.rows()
    if rows:
        section.table = Table.plain(pd.DataFrame(rows))
    if len(rows) > 1:
        section.notes.append(
            f"These results come from {len(rows)} different machines or commits; tables show the "
            "run of each row."
        )
    return section


def _job_section(frames: Frames) -> Section:
    section = Section("job", "The main job's steps")
    job = frames.job
    if job is None:
        return section
    tasks = pd.DataFrame(job.get("tasks") or [])
    if not tasks.empty:
        section.table = Table.plain(tasks.astype(object).where(tasks.notna(), "").astype(str))
        for task in job.get("tasks") or []:
            if task.get("status") not in ("ok", "done"):
                section.missing.append(
                    f"{task.get('engine')} {task.get('step')}: {task.get('status')} — "
                    f"{task.get('reason')}"
                )
    return section


def _gaps_section(sections: list[Section], gaps: list[str]) -> Section:
    section = Section("gaps", "Gaps: what is not measured, and where it would come from")
    rows = [{"what": m, "kind": "not measured"} for s in sections for m in s.missing]
    rows += [{"what": g, "kind": "results file not used"} for g in gaps]
    if rows:
        section.table = Table.plain(pd.DataFrame(rows))
    else:
        section.intro = "Every cell above is measured."
    return section


def build_report(results_dir: Path, out_dir: Path) -> Report:
    """Read ``results_dir`` and write the scorecard into ``out_dir`` (charts in ``charts/``)."""
    results = load_results(results_dir)
    frames = build_frames(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = draw_charts(frames, out_dir / "charts")
    matrix, reasons = matrix_section(frames)
    perf = performance_section(frames)
    perf.charts = charts
    sections = [
        whom_section(frames),
        matrix,
        reasons,
        perf,
        micro_section(frames),
        decisions_section(frames),
        glue_section(frames),
        _job_section(frames),
        _runs_section(frames),
    ]
    for chart in charts:
        if chart.gap:
            perf.missing.append(f"chart '{chart.title}': {chart.gap}")
    gaps = [f"{g.path}: {g.reason}" for g in results.gaps]
    sections.append(_gaps_section(sections, gaps))
    files = len(list(results_dir.glob("*.json")))
    header = [
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from {files} results "
        f"files in {results_dir}.",
        *_job_lines(frames),
    ]
    if len(frames.runs.rows()) > 1:
        header.append(
            "**Mixed runs:** these results come from more than one machine or commit "
            "(see 'Where the results come from')."
        )
    md = render_markdown(TITLE, header, sections, out_dir / "scorecard.md")
    html = render_html(TITLE, header, sections, out_dir / "scorecard.html")
    return Report(
        md,
        html,
        charts=[c.png for c in charts if c.png is not None],
        matrix=matrix.table.md if matrix.table is not None else None,
        gaps=gaps,
        missing=[m for s in sections for m in s.missing],
    )
