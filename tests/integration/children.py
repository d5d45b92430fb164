"""Helpers of the integration tier: the suite's own child processes, for engine-specific faults."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from obsqueue.conformance.faults import Child, start_child
from obsqueue.conformance.spec import EngineSpec


@contextlib.contextmanager
def child(role: str, spec: EngineSpec, history: Path, name: str, **config: Any) -> Iterator[Child]:
    """``conformance.faults.start_child``, and its stdout pipe closed afterwards (``Child`` leaves
    it to the garbage collector, which ``filterwarnings = error`` turns into a failure)."""
    started = start_child(role, spec, history, name, **config)
    try:
        with started:
            yield started
    finally:
        if started.process.stdout is not None:
            started.process.stdout.close()
