"""Facts about one engine, read from the live engine and the server it ran on.

* the server programs and processes a throwaway server needed — the process trees of the
  processes its handle started, walked in ``/proc`` (their ``comm`` names);
* ``describe()``'s durability settings and the server's own ``describe()``;
* the adapter's glue: what the library gives (the bold headings of the engine docstring's
  "What … gives" section) and what obsqueue adds (the class's ``glue``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["glue_of", "server_processes"]

#: The first bold phrase of each bullet: ``* **Jobs.** Each…`` or ``* a **task** per…``.
_HEADING = re.compile(r"^\*\s+[^\n*]*\*\*(?P<title>[^*]+?)\.?\*\*", re.MULTILINE)


def _children(pid: int) -> list[int]:
    found = []
    for path in Path("/proc").glob(f"{pid}/task/*/children"):
        try:
            found += [int(p) for p in path.read_text().split()]
        except OSError:
            continue
    return found


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def server_processes(handle: object) -> dict[str, Any]:
    """Every live process in the trees of the Popen objects ``handle`` holds, by program name."""
    roots = [
        value.pid
        for value in vars(handle).values()
        if isinstance(value, subprocess.Popen) and value.poll() is None
    ]
    programs: dict[str, int] = {}
    stack, seen = list(roots), set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        name = _comm(pid)
        if name is not None:
            programs[name] = programs.get(name, 0) + 1
        stack += _children(pid)
    return {
        "started": len(roots),
        "processes": sum(programs.values()),
        "programs": dict(sorted(programs.items())),
        "source": "process trees of the throwaway server, walked in /proc",
    }


def glue_of(cls: type) -> dict[str, Any]:
    """What the library gives and what obsqueue adds, as the engine class documents them."""
    doc = cls.__doc__ or ""
    module_doc = getattr(__import__(cls.__module__, fromlist=["_"]), "__doc__", None) or ""
    gives: list[str] = []
    for text in (module_doc, doc):
        section = re.split(r"^What [^\n]*(?:adds|lacks)", text, maxsplit=1, flags=re.MULTILINE)
        if "gives" in section[0]:
            gives = [m.group("title").strip() for m in _HEADING.finditer(section[0])]
            if gives:
                break
    adds = [str(item) for item in getattr(cls, "glue", ())]
    return {
        "library_gives": gives,
        "obsqueue_adds": adds,
        "source": f"{cls.__module__}.{cls.__qualname__}: docstring and glue",
    }
