"""The durability sweep: one workload across a backend's durability configurations, each joined
with what the conformance history checker saw lost or repeated across kills in that
configuration — the data of a durability-versus-speed chart.

Configurations: SQLite ``synchronous`` OFF / NORMAL / FULL (an engine option); PostgreSQL
``synchronous_commit`` on / off (the throwaway server's ``durable`` / ``async`` profile); Redis
``appendfsync`` always / everysec / no (``durable`` / ``everysec`` / ``none``). The default
configuration keeps the plain label (``sqlite``, ``redis``), so it is the same result as a run
without the sweep. The join reads ``conformance-<label>.json`` from the results directory and
uses it only if its recorded durability settings are this configuration's; otherwise the point
says no conformance result exists for it and how to make one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from obsqueue.engines import scheme_of
from obsqueue.results import ResultsFormatError, conformance_path, read_results, write_results

__all__ = ["Config", "configs_for", "conformance_join", "write_sweep"]

KILL_PROPERTIES = ("P4", "P5")


@dataclass(frozen=True)
class Config:
    """One engine URL in one durability configuration."""

    given: str
    setting: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    suffix: str = ""


def configs_for(url: str) -> list[Config]:
    """Every durability configuration of the backend of ``url`` (just ``url`` if none)."""
    scheme = scheme_of(url)
    bare = url.split("?", 1)[0]
    if scheme == "sqlite":
        # in the URL, not only as an engine option: the ceiling and the peers read the level
        # from the engine URL, so each configuration compares engine and references at one level
        return [
            Config(
                _with_query(url, synchronous=level),
                {"synchronous": level},
                {},
                _sqlite_suffix(level),
            )
            for level in ("OFF", "NORMAL", "FULL")
        ]
    if scheme in ("postgresql", "postgres"):
        return [
            Config(bare, {"synchronous_commit": "on"}),
            Config(f"{bare}?server_durability=async", {"synchronous_commit": "off"}),
        ]
    if scheme.rsplit("+", 1)[-1] == "redis":
        return [
            Config(bare, {"appendfsync": "always"}),
            Config(f"{bare}?server_durability=everysec", {"appendfsync": "everysec"}),
            Config(f"{bare}?server_durability=none", {"appendfsync": "no", "appendonly": "no"}),
        ]
    return [Config(url, {})]


def _with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` set in its query string (replacing the same keys)."""
    # by hand, not urlunsplit: that drops the empty authority of sqlite:///path
    base, _, query_string = url.partition("?")
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    query.update(params)
    return f"{base}?{urlencode(query)}"


def _sqlite_suffix(level: str) -> str:
    return "" if level == "FULL" else f"-sync-{level.lower()}"


def conformance_join(results_dir: Path, label: str, setting: dict[str, str]) -> dict[str, Any]:
    """What the conformance run of ``label`` in this configuration saw across kills."""
    path = conformance_path(results_dir, label)
    how = f"run `obsqueue conformance` on this configuration to fill it in ({path.name})"
    try:
        doc = read_results(path, "conformance")
    except ResultsFormatError:
        return {"source": None, "reason": f"no conformance result; {how}"}
    recorded = (doc.get("versions") or {}).get("durability") or {}
    mismatch = {k: recorded.get(k) for k, v in setting.items() if str(recorded.get(k)) != v}
    if mismatch:
        return {"source": None, "reason": f"{path.name} was measured with {mismatch}; {how}"}
    joined: dict[str, Any] = {"source": path.name, "reason": None}
    for prop in doc.get("properties", []):
        if prop.get("id") in KILL_PROPERTIES:
            joined[prop["id"]] = {"outcome": prop["outcome"], "anomalies": prop["anomalies"]}
    counts = [joined.get(p, {}).get("anomalies", {}) for p in KILL_PROPERTIES]
    joined["lost"] = max((c.get("lost", 0) for c in counts), default=0)
    joined["duplicated"] = max((c.get("duplicated", 0) for c in counts), default=0)
    return joined


def write_sweep(results_dir: Path, docs: list[dict[str, Any]], configs: list[Config]) -> Path:
    """``bench-durability-<engine>-<workload>.json``: one point per configuration."""
    points = []
    for doc, config in zip(docs, configs, strict=True):
        figures = doc.get("summary", {}).get("obsqueue", {}).get("figures", {})
        points.append(
            {
                "engine": doc["engine"],
                "setting": config.setting,
                "status": doc["status"],
                "reason": doc["reason"],
                "durability": doc.get("durability", {}),
                "figures": figures,
                "conformance": conformance_join(results_dir, doc["engine"], config.setting),
            }
        )
    engine = docs[0]["engine"].removesuffix(configs[0].suffix)
    name = f"bench-durability-{engine}-{docs[0]['workload']}.json"
    body = {"engine": engine, "workload": docs[0]["workload"], "points": points}
    return write_results(results_dir / name, "benchmark-durability", body)
