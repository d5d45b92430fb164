""" "Which engine for whom", derived from the numbers in the other sections — never hand-written.

Each line is a rule over measured values (outcomes, drained/s, lost per kill, footprint, server
kind) and quotes the values it used; a rule with no engine that qualifies says so.
"""

from __future__ import annotations

from obsqueue.reporting.decisions import kill_losses
from obsqueue.reporting.frames import Frames
from obsqueue.reporting.matrix import outcome_counts
from obsqueue.reporting.model import Section
from obsqueue.reporting.performance import engine_speed

__all__ = ["whom_section"]

BAD = frozenset({"fail", "unknown", "missing"})


def _clean(counts: dict[str, dict[str, int]]) -> list[str]:
    """Engines with no failed, unknown or expected-fail property."""
    return [e for e, per in counts.items() if not set(per) & (BAD | {"expected-fail"})]


def _they(engines: list[str]) -> str:
    return ", ".join(sorted(engines)) + (" holds" if len(engines) == 1 else " hold")


def _fastest(engines: list[str], speed: dict[str, float]) -> str | None:
    measured = [e for e in engines if e in speed]
    return max(measured, key=lambda e: speed[e]) if measured else None


def _server(frames: Frames, engine: str) -> str | None:
    fact = frames.facts.get(engine)
    if fact is not None:
        return fact.get("server_kind")
    rows = frames.engines.loc[frames.engines.engine == engine, "server_kind"]
    return rows.iloc[0] if not rows.empty and isinstance(rows.iloc[0], str) else None


def _lines(frames: Frames) -> list[str]:
    counts = outcome_counts(frames)
    speed = engine_speed(frames)
    clean = _clean(counts)
    durable = [e for e in clean if _holds_p4(frames, e) and _crash_durable(frames, e)]
    lines = []
    embedded = [e for e in durable if _server(frames, e) is None]
    pick = _fastest(embedded, speed)
    if pick:
        lines.append(
            f"**A local-first tool or a laptop (no server to run):** {pick} — the fastest "
            "embedded engine that holds every property it declares, durability included "
            f"({speed[pick]:,.0f} drained/s)."
        )
    elif embedded:
        lines.append(
            "**A local-first tool or a laptop (no server to run):** "
            f"{_they(embedded)} every property declared, durability included (no drained/s "
            "measured to rank them)."
        )
    else:
        lines.append("**A local-first tool:** no embedded engine holds P4 durable enqueue here.")
    by_server: dict[str, list[str]] = {}
    for e in durable:
        kind = _server(frames, e)
        if kind is not None:
            by_server.setdefault(kind, []).append(e)
    for kind, engines in sorted(by_server.items()):
        best = _fastest(engines, speed)
        if best is None:
            lines.append(
                f"**A team that already runs {kind}:** {_they(engines)} every property "
                "declared (no drained/s measured to rank them)."
            )
        else:
            others = ", ".join(
                f"{e} {speed[e]:,.0f}/s" for e in engines if e != best and e in speed
            )
            lines.append(
                f"**A team that already runs {kind}:** {best} ({speed[best]:,.0f} drained/s"
                + (f"; also conformant: {others}" if others else "")
                + ")."
            )
    fastest = _fastest(durable, speed)
    if fastest:
        lines.append(
            f"**The most throughput with every declared property holding, durability "
            f"included:** {fastest} ({speed[fastest]:,.0f} drained/s)."
        )
    weak = sorted(e for e in clean if _holds_p4(frames, e) and not _crash_durable(frames, e))
    if weak:
        lines.append(
            "**Durable across client kills, not across a server kill -9 in the configuration "
            f"measured** (describe() says server_crash_durable=false): {', '.join(weak)}."
        )
    lines += _cautions(frames, counts, speed)
    return lines


def _crash_durable(frames: Frames, engine: str) -> bool:
    """False when the engine's live durability settings say a server kill -9 may lose writes
    (``server_crash_durable: false``): a held P4 there is luck, not a guarantee."""
    rows = frames.engines.loc[frames.engines.engine == engine, "durability"]
    settings = rows.iloc[0] if not rows.empty else None
    return not (isinstance(settings, dict) and settings.get("server_crash_durable") is False)


def _holds_p4(frames: Frames, engine: str) -> bool:
    props = frames.properties
    mine = props[(props.engine == engine) & (props.id == "P4")]
    return not mine.empty and str(mine["outcome"].iloc[-1]) in {"pass", "partial"}


def _cautions(
    frames: Frames, counts: dict[str, dict[str, int]], speed: dict[str, float]
) -> list[str]:
    lines = []
    for engine, (lost, runs) in sorted(kill_losses(frames).items()):
        if lost:
            fast = f" although it drains {speed[engine]:,.0f}/s" if engine in speed else ""
            lines.append(
                f"**Not for work you cannot lose:** {engine} lost {lost} acknowledged messages "
                f"in {runs} kill scenario(s){fast}."
            )
    for engine, per in sorted(counts.items()):
        failed = per.get("fail", 0)
        if failed:
            lines.append(f"**Check before use:** {engine} fails {failed} propert(ies) it declares.")
        lacking = per.get("unsupported", 0)
        if lacking >= 4:
            lines.append(
                f"**Only if you can do without {lacking} properties:** {engine} does not "
                "declare them (see the matrix)."
            )
    readable = sorted(e for e, d in frames.privacy.items() if d.get("plain_text"))
    if readable:
        lines.append(
            "**Sensitive payloads:** readable as plain text in the storage files of "
            f"{', '.join(readable)} — encrypt payloads before enqueueing, or protect the disk."
        )
    return lines


def whom_section(frames: Frames) -> Section:
    section = Section("whom", "Which engine for whom")
    section.intro = "Generated from the matrix, the performance figures and the decision rows."
    section.notes = _lines(frames)
    if not engine_speed(frames):
        section.missing.append("'which engine for whom' ranks by drained/s: no benchmark figures")
    return section
