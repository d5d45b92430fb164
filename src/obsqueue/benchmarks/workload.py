"""Workloads as data: a TOML file, checked key by key, with a ``quick`` and a ``full`` profile.

A workload file names what it measures (``measure``) and the shape of the traffic: sessions,
messages per session, payload sizes, producer and consumer processes, how messages arrive
(``[arrival]``), warm-up, rounds and a timeout. ``[profile.quick]`` / ``[profile.full]`` hold
overrides laid over the top level (tables merge key by key). The shipped files live in
``benchmarks/workloads/``; ``load_workload("sessions")`` reads one of them,
``load_workload("my.toml")`` a user's own. Every key is checked: an unknown key, a wrong type or
an impossible value raises ``WorkloadError`` naming the file, the key and the reason.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from obsqueue.errors import ObsqueueError

__all__ = [
    "MEASURES",
    "PROFILES",
    "REFERENCES",
    "Arrival",
    "Payload",
    "Workload",
    "WorkloadError",
    "load_workload",
    "shipped_workloads",
]

#: ``obsqueue bench --references``: beside each engine its raw ceiling and every peer library on
#: its backend (``all``), or only the ceiling (``ceiling``).
REFERENCES = ("auto", "all", "ceiling")

MEASURES = ("throughput", "latency", "idle", "recovery", "scaling")
PROFILES = ("quick", "full")
MODES = ("preload", "closed", "rate")
DISTRIBUTIONS = ("fixed", "uniform", "loguniform")
#: ``tool_use_ids``: ``none`` (no dedupe key) or ``unique`` (every message its own, so each
#: enqueue runs the dedupe path as a real producer's does)
TOOL_USE_IDS = ("none", "unique")


class WorkloadError(ObsqueueError):
    """A workload file that cannot be run: the file, the key and the reason."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source, self.key, self.reason = source, key, reason
        super().__init__(f"{source}: {key}: {reason}")


@dataclass(frozen=True)
class Payload:
    """Payload sizes in bytes, drawn per message from a fixed-seed distribution."""

    distribution: str = "fixed"
    min_bytes: int = 256
    max_bytes: int = 256
    seed: int = 1


@dataclass(frozen=True)
class Arrival:
    """How producers send: ``preload`` (all first, then drain), ``closed`` (as fast as they can,
    while consumers run) or ``rate`` (open loop at ``rate_per_s`` in total for ``duration_s``).
    Messages go out in bursts of ``burst_min``…``burst_max`` messages of one session."""

    mode: str = "closed"
    rate_per_s: float = 100.0
    duration_s: float = 5.0
    burst_min: int = 1
    burst_max: int = 1
    pause_ms: float = 0.0


@dataclass(frozen=True)
class Workload:
    """A parsed, checked workload at one profile."""

    name: str
    measure: str
    profile: str
    source: str
    description: str = ""
    sessions: int = 1
    messages_per_session: int = 100
    producers: int = 1
    consumers: int = 1
    warmup_messages: int = 0
    tool_use_ids: str = "none"
    rounds: int = 3
    timeout_s: float = 120.0
    payload: Payload = field(default_factory=Payload)
    arrival: Arrival = field(default_factory=Arrival)
    engine: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    recovery: dict[str, Any] = field(default_factory=dict)
    scaling: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def total_messages(self) -> int:
        return self.sessions * self.messages_per_session

    def to_json(self) -> dict[str, Any]:
        """The parsed file at this profile, as results carry it."""
        return {"name": self.name, "profile": self.profile, "source": self.source, **self.raw}


Check = Callable[[Any], str | None]


def _int(low: int, high: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, int) or isinstance(v, bool):
            return f"must be an integer, got {v!r}"
        if v < low or (high is not None and v > high):
            return f"must be between {low} and {high}, got {v}" if high else f"must be >= {low}"
        return None

    return check


def _num(low: float, *, strict: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, int | float) or isinstance(v, bool):
            return f"must be a number, got {v!r}"
        if v < low or (strict and v == low):
            return f"must be {'>' if strict else '>='} {low}, got {v}"
        return None

    return check


def _choice(options: tuple[str, ...]) -> Check:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}; got {v!r}"

    return check


def _list(item: Check, *, min_len: int = 1) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list) or len(v) < min_len:
            return f"must be a list of at least {min_len} value(s), got {v!r}"
        for i, x in enumerate(v):
            if (problem := item(x)) is not None:
                return f"item {i}: {problem}"
        return None

    return check


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) else f"must be a string, got {v!r}"


def _table(v: Any) -> str | None:
    return None if isinstance(v, dict) else f"must be a table, got {v!r}"


_FRACTION: Check = lambda v: _num(0, strict=True)(v) or (None if v <= 1 else "must be <= 1")  # noqa: E731

#: Every key a workload file may hold, by table; ``None`` = the top level.
KEYS: dict[str | None, dict[str, Check]] = {
    None: {
        "name": _text,
        "description": _text,
        "measure": _choice(MEASURES),
        "sessions": _int(1, 100_000),
        "messages_per_session": _int(1),
        "producers": _int(1, 64),
        "consumers": _int(1, 64),
        "warmup_messages": _int(0),
        "tool_use_ids": _choice(TOOL_USE_IDS),
        "rounds": _int(1, 50),
        "timeout_s": _num(0, strict=True),
    },
    "payload": {
        "distribution": _choice(DISTRIBUTIONS),
        "min_bytes": _int(0, 8 * 1024 * 1024),
        "max_bytes": _int(0, 8 * 1024 * 1024),
        "seed": _int(0),
    },
    "arrival": {
        "mode": _choice(MODES),
        "rate_per_s": _num(0, strict=True),
        "duration_s": _num(0, strict=True),
        "burst_min": _int(1),
        "burst_max": _int(1),
        "pause_ms": _num(0),
    },
    "latency": {
        "fractions": _list(_FRACTION),
        "report_fraction": _FRACTION,
        "p99_target_ms": _num(0, strict=True),
        "search_steps": _int(1, 20),
    },
    "idle": {"gaps_s": _list(_num(0, strict=True)), "samples": _int(1, 1000)},
    "recovery": {"lease_s": _num(0, strict=True), "samples": _int(1, 100)},
    "scaling": {
        "sessions": _list(_int(1, 100_000), min_len=0),
        "consumers": _list(_int(1, 64), min_len=0),
        "depth": _list(_int(1), min_len=0),
    },
    "engine": {"lease_s": _num(0, strict=True), "max_attempts": _int(1)},
}


def shipped_workloads() -> list[str]:
    """The names of the workload files shipped in the package."""
    folder = resources.files("obsqueue.benchmarks").joinpath("workloads")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_workload(name_or_file: str | Path, profile: str = "quick") -> Workload:
    """A shipped workload by name, or a user's TOML file by path, at ``profile``."""
    text, source = _read(str(name_or_file))
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(source, "(file)", f"not valid TOML: {exc}") from exc
    return parse_workload(document, source, profile)


def parse_workload(document: Mapping[str, Any], source: str, profile: str) -> Workload:
    """Check ``document`` (a parsed TOML file) and lay ``[profile.<profile>]`` over it."""
    if profile not in PROFILES:
        raise WorkloadError(source, "profile", f"must be one of {', '.join(PROFILES)}")
    base = dict(document)
    profiles = base.pop("profile", {})
    _check(base, source, "")
    if _table(profiles) is not None:
        raise WorkloadError(source, "profile", "must be a table of quick/full overrides")
    for name, overrides in profiles.items():
        if name not in PROFILES:
            raise WorkloadError(source, f"profile.{name}", f"unknown profile; use {PROFILES}")
        _check(overrides, source, f"profile.{name}.")
    merged = _merge(base, profiles.get(profile, {}))
    for key in ("name", "measure"):
        if key not in merged:
            raise WorkloadError(source, key, "is required")
    return _build(merged, source, profile)


def _read(name_or_file: str) -> tuple[str, str]:
    path = Path(name_or_file)
    if path.suffix == ".toml" or path.exists():
        try:
            return path.read_text("utf-8"), str(path)
        except OSError as exc:
            raise WorkloadError(str(path), "(file)", f"cannot be read: {exc}") from exc
    shipped = shipped_workloads()
    if name_or_file not in shipped:
        raise WorkloadError(
            name_or_file, "(workload)", f"no such file or shipped workload; shipped: {shipped}"
        )
    entry = resources.files("obsqueue.benchmarks").joinpath(f"workloads/{name_or_file}.toml")
    return entry.read_text("utf-8"), f"obsqueue/benchmarks/workloads/{name_or_file}.toml"


def _check(table: Mapping[str, Any], source: str, prefix: str) -> None:
    for key, value in table.items():
        if key in KEYS and key is not None:
            if (problem := _table(value)) is not None:
                raise WorkloadError(source, prefix + key, problem)
            allowed = KEYS[key]
            for sub, subvalue in value.items():
                _check_key(allowed, sub, subvalue, source, f"{prefix}{key}.")
        else:
            _check_key(KEYS[None], key, value, source, prefix)


def _check_key(allowed: Mapping[str, Check], key: str, value: Any, source: str, at: str) -> None:
    if key not in allowed:
        raise WorkloadError(source, at + key, f"unknown key; expected one of {sorted(allowed)}")
    if (problem := allowed[key](value)) is not None:
        raise WorkloadError(source, at + key, problem)


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def _build(merged: dict[str, Any], source: str, profile: str) -> Workload:
    payload = Payload(**merged.get("payload", {}))
    if payload.min_bytes > payload.max_bytes:
        raise WorkloadError(source, "payload.max_bytes", "must be >= payload.min_bytes")
    arrival = Arrival(**merged.get("arrival", {}))
    if arrival.burst_min > arrival.burst_max:
        raise WorkloadError(source, "arrival.burst_max", "must be >= arrival.burst_min")
    top: dict[str, Any] = {k: v for k, v in merged.items() if k in KEYS[None]}
    for table in ("engine", "latency", "idle", "recovery", "scaling"):
        top[table] = dict(merged.get(table, {}))
    workload = Workload(
        **top, profile=profile, source=source, payload=payload, arrival=arrival, raw=merged
    )
    if workload.warmup_messages >= workload.total_messages and workload.measure != "latency":
        raise WorkloadError(source, "warmup_messages", "must be below the message count")
    if workload.measure == "scaling" and not any(workload.scaling.values()):
        raise WorkloadError(source, "scaling", "a scaling workload needs at least one sweep")
    return workload
