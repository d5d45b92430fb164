"""The rows a team asks about, per engine — each measured, or saying where it would come from.

* local-first install and server programs/processes: the probes' ``facts-<engine>.json``
  (the throwaway server's process tree), else the conformance results' ``server``;
* dependency footprint: ``facts``' sizes summed from installed ``RECORD`` files;
* privacy: ``privacy-<engine>.json`` (a canary payload searched for in the storage files);
* durability: the settings ``describe()`` reported while the suite ran, and what the history
  checker saw lost across the suite's kill scenarios;
* the glue table: what each adapter's library gives and what obsqueue adds (``facts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from obsqueue.reporting.frames import Frames, durability_text, wakeup_ms
from obsqueue.reporting.matrix import engine_order
from obsqueue.reporting.model import Section, Table

__all__ = ["KILL_MARK", "decision_rows", "decisions_section", "glue_section", "kill_losses"]

KILL_MARK = "kill"
RAN = frozenset({"pass", "fail", "expected-fail", "partial"})


def kill_losses(frames: Frames) -> dict[str, tuple[int, int]]:
    """Per engine: (acknowledged messages lost, kill scenarios that ran) in P4/P5 tests."""
    tests = frames.tests
    out: dict[str, tuple[int, int]] = {}
    if tests.empty:
        return out
    for row in tests.to_dict("records"):
        props = set(row["properties"])
        if KILL_MARK not in str(row["name"]) or not props & {"P4", "P5"}:
            continue
        if row["outcome"] not in RAN:
            continue
        lost, runs = out.get(str(row["engine"]), (0, 0))
        out[str(row["engine"])] = (lost + int(row["anomalies"].get("lost", 0)), runs + 1)
    return out


def _size(fact: dict[str, Any] | None) -> str:
    if fact is None:
        return ""
    size = fact.get("footprint") or {}
    total = float(size.get("total_bytes") or 0)
    folders = size.get("folders") or {}
    if folders:
        where = ", ".join(str(Path(f).relative_to(Path(f).parents[1])) for f in folders)
        return f"{total / 2**20:.1f} MiB of npm packages ({where}); Node.js itself not counted"
    if size.get("extra") is None:
        return "0 MiB: standard library only"
    names = ", ".join(size.get("distributions") or {})
    missing = f"; not installed here: {', '.join(size['missing'])}" if size.get("missing") else ""
    return f"{total / 2**20:.1f} MiB ({names}){missing}"


def _processes(fact: dict[str, Any] | None, server_kind: str | None) -> str:
    if fact is not None and fact.get("server_kind") is None:
        return "0 (embedded)"
    procs = (fact or {}).get("server_processes")
    if procs:
        programs = ", ".join(f"{name} ({n} processes)" for name, n in procs["programs"].items())
        return f"{len(procs['programs'])} program(s): {programs}"
    if server_kind:
        return ""
    return ""


def _privacy(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return ""
    if doc.get("status") != "ok":
        return f"not measured: {doc.get('status')}: {doc.get('reason')}"
    found = doc.get("plain_text")
    if found is None:
        return "no storage files (kept in process memory)"
    where = ", ".join(doc.get("found_in") or [])
    if found:
        return f"yes: plain text in {where}"
    return (
        f"no: not found as plain text in {doc.get('files_scanned')} file(s) of the "
        f"{doc.get('storage')} (compressed or encoded is not encrypted)"
    )


def _wakeup(figures: dict[str, float] | None) -> str:
    if not figures or "p99" not in figures:
        return ""
    return f"{figures.get('p50', float('nan')):.1f} / {figures['p99']:.1f} (another process)"


def _durable(frames: Frames, engine: str, losses: dict[str, tuple[int, int]]) -> str:
    rows = frames.engines[frames.engines.engine == engine]
    settings = rows["durability"].iloc[0] if not rows.empty else None
    text = durability_text(settings)
    lost, runs = losses.get(engine, (0, 0))
    verdict = f"; lost {lost} acknowledged in {runs} kill scenario(s)" if runs else ""
    return text + verdict


def _source(column: str, engine: str) -> str:
    """Where a decision cell's value comes from, for the list of cells not measured."""
    if column.startswith("wakeup"):
        return (
            f"P9 timings of a consumer in another process in conformance-{engine}.json "
            "(`obsqueue conformance`; an engine without multi_process has none)"
        )
    kind = "privacy" if column.startswith("payload") else "facts"
    return f"{kind}-{engine}.json (`python -m obsqueue.probes`)"


def _local_first(fact: dict[str, Any] | None, server_kind: str | None) -> str:
    """Whether the engine installs with pip alone and runs with no server: an engine whose
    footprint has folders outside Python's (a Node engine's node_modules) needs that runtime."""
    if server_kind is not None:
        return f"no: needs a {server_kind} server"
    footprint = (fact or {}).get("footprint") or {}
    if any("node_modules" in folder for folder in footprint.get("folders") or {}):
        return "no server, but Node.js and `npm ci` in node/ beside pip"
    return "yes: pip install, no server"


def decision_rows(frames: Frames) -> tuple[pd.DataFrame, list[str]]:
    """One row per engine, and the list of cells that are not measured (with their source)."""
    losses = kill_losses(frames)
    wake = wakeup_ms(frames)
    rows, missing = [], []
    engines = engine_order(frames) + sorted(set(frames.facts) - set(engine_order(frames)))
    for engine in engines:
        fact, priv = frames.facts.get(engine), frames.privacy.get(engine)
        kinds = frames.engines.loc[frames.engines.engine == engine, "server_kind"]
        server_kind = kinds.iloc[0] if not kinds.empty and isinstance(kinds.iloc[0], str) else None
        if fact is not None:
            server_kind = fact.get("server_kind")
        row = {
            "engine": engine,
            "local-first install": _local_first(fact, server_kind),
            "server processes": _processes(fact, server_kind),
            "installed size of its dependencies": _size(fact),
            "payload readable on disk": _privacy(priv),
            "durable with": _durable(frames, engine, losses),
            "wakeup p50 / p99 ms": _wakeup(wake.get(engine)),
        }
        if fact is not None and fact.get("status") != "ok":
            row["server processes"] = f"not measured: {fact.get('reason')}"
        for column, value in row.items():
            if not value:
                row[column] = "not measured"
                missing.append(f"{engine}: {column} — {_source(column, engine)}")
        rows.append(row)
    return pd.DataFrame(rows), missing


def decisions_section(frames: Frames) -> Section:
    section = Section("decisions", "The questions a team asks")
    table, missing = decision_rows(frames)
    section.missing += missing
    if not table.empty:
        section.table = Table.plain(table)
    section.intro = (
        "Local-first and server processes: the throwaway server's process tree; sizes: the "
        "installed distributions' RECORD files of the engine's extra; privacy: a canary payload "
        "enqueued into a fresh store and searched for in its storage files; durability: the "
        "settings the engine's describe() reported during the suite and what the history "
        "checker found lost across its kill scenarios."
    )
    return section


def glue_section(frames: Frames) -> Section:
    section = Section("glue", "Glue: what each library gives, what obsqueue adds")
    rows = []
    for engine, fact in sorted(frames.facts.items()):
        glue = fact.get("glue") or {}
        adds, gives = glue.get("obsqueue_adds") or [], glue.get("library_gives") or []
        if not adds and not gives:
            continue
        rows.append(
            {
                "engine": engine,
                "the library gives": "; ".join(gives) or "not listed in its docstring",
                "obsqueue adds": "; ".join(adds),
                "glue items": str(len(adds)),
                "source": glue.get("source", ""),
            }
        )
    if rows:
        section.table = Table.plain(pd.DataFrame(rows))
    else:
        section.missing.append(
            "glue table: no facts-*.json with glue (`python -m obsqueue.probes`)"
        )
    return section
