"""Run the probes on engine URLs and write ``privacy-<label>.json`` and ``facts-<label>.json``.

Each engine gets a fresh store: a temporary directory for file engines, a throwaway server that
this probe starts and stops (``resolve_engine(..., owned=True)``). An engine that cannot run
here gets results with ``status: unavailable`` and the reason, never a silent gap.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obsqueue.engines import engine_class, open_engine, registered_engines
from obsqueue.engines.base import PendingMessage
from obsqueue.errors import ObsqueueError, redact_url
from obsqueue.probes import facts, footprint, privacy
from obsqueue.results import environment, safe_label, write_results
from obsqueue.servers import resolve_engine, split_server_durability

__all__ = ["probe_engine", "run_probes"]


def _extra(url: str) -> str | None:
    scheme = url.split("://", 1)[0].lower()
    entry = registered_engines().get(scheme)
    return entry.extra if entry is not None else None


def _footprint(given: str, cls: type[Any]) -> footprint.Footprint:
    """The extra's Python distributions, plus the npm packages of an engine in node/."""
    size = footprint.extra_footprint(_extra(given))
    if given.startswith("exec+") and issubclass(cls, _node_engine_base()):
        from obsqueue.engines.process.nodejs import NODE_DIR

        modules = NODE_DIR / "node_modules"
        size.folders[str(modules)] = footprint.directory_bytes(modules)
    return size


def _node_engine_base() -> type[Any]:
    from obsqueue.engines.process.engine import ProcessEngine

    return ProcessEngine


def _header(given: str, label: str) -> dict[str, Any]:
    return {"engine": label, "given": given, "environment": environment(), "commit": None}


def probe_engine(given: str, directory: Path, commit: str | None) -> dict[str, dict[str, Any]]:
    """Measure one engine; returns ``{"privacy": body, "facts": body}`` (also written)."""
    cls = engine_class(split_server_durability(given)[0])
    label = safe_label(given)
    base = _header(given, label) | {"commit": commit}
    size = _footprint(given, cls).as_dict()
    fact: dict[str, Any] = base | {
        "server_kind": cls.server_kind,
        "footprint": size,
        "glue": facts.glue_of(cls),
    }
    with (
        privacy.temp_store_dir() as tmp,
        resolve_engine(given, owned=True, file_dir=Path(tmp)) as r,
    ):
        label = r.label
        base["engine"] = fact["engine"] = label
        if r.unavailable:
            out = {
                "privacy": base | {"status": "unavailable", "reason": r.unavailable},
                "facts": fact | {"status": "unavailable", "reason": r.unavailable},
            }
        else:
            out = _measure(r, Path(tmp), base, fact)
    for kind, body in out.items():
        write_results(directory / f"{kind}-{safe_label(label)}.json", kind, body)
    return out


def _measure(
    resolved: Any, tmp: Path, base: dict[str, Any], fact: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    canary = privacy.new_canary()
    server = resolved.server
    try:
        engine = open_engine(resolved.url)
    except ObsqueueError as exc:
        reason = f"{redact_url(resolved.url)} did not open: {exc}"
        return {
            "privacy": base | {"status": "failed", "reason": reason},
            "facts": fact | {"status": "failed", "reason": reason},
        }
    with engine:
        engine.enqueue(
            "privacy-probe",
            "privacy-probe",
            PendingMessage(kind="observation", payload={"note": canary}),
        )
        privacy.settle()
        root = privacy.storage_dir(
            getattr(server, "workdir", None), tmp, resolved.engine_class.server_kind
        )
        what = f"{server.kind} server data directory" if server else "the engine's files"
        scan = privacy.scan_for(canary.encode(), root, what)
        described = engine.describe()
    fact |= {
        "status": "ok",
        "reason": None,
        "durability": described.get("durability"),
        "server": server.describe() if server else None,
        "server_processes": facts.server_processes(server) if server else None,
    }
    return {"privacy": base | {"status": "ok", "reason": None, **scan.as_dict()}, "facts": fact}


def run_probes(
    urls: list[str],
    directory: Path,
    *,
    commit: str | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> int:
    """Probe every URL in turn; 0 when each was measured or reported unavailable."""
    code = 0
    for url in urls:
        started = time.monotonic()
        try:
            out = probe_engine(url, directory, commit)
        except ObsqueueError as exc:
            progress(f"{url}: {exc}")
            code = 1
            continue
        with contextlib.suppress(KeyError):
            status = out["privacy"]["status"]
            progress(f"{url}: {status} ({time.monotonic() - started:.1f} s)")
    return code
