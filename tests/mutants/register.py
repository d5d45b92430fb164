"""pytest plugin (``-p tests.mutants.register``): registers every mutant engine's URL scheme,
``mutant-<name>://``, in the run and (through the engine spec) in its child processes."""

from __future__ import annotations

import re

from obsqueue.engines import register_engine
from tests.mutants.memory_mutants import MEMORY_MUTANTS


def scheme_for(cls: type) -> str:
    """``LifoEngine`` -> ``mutant-lifo``."""
    words = re.findall(r"[A-Z][a-z0-9]*", cls.__name__.removesuffix("Engine"))
    return "mutant-" + "-".join(w.lower() for w in words)


def all_mutants() -> list[type]:
    from tests.mutants.sqlite_mutants import SQLITE_MUTANTS

    return [*MEMORY_MUTANTS, *SQLITE_MUTANTS]


for _cls in all_mutants():
    register_engine(scheme_for(_cls), f"{_cls.__module__}:{_cls.__qualname__}")
