"""The main job in CI: the conformance suite on every shipped engine (``shipped_engines.toml``),
each in its own process with throwaway servers, two at a time; an engine whose matrix differs
from what it declares (and its declared expected-fails) fails here."""

from __future__ import annotations

import time
from typing import Any

import pytest

from obsqueue.conformance.declared import ShippedEngine, mismatches, shipped_engines
from obsqueue.results import safe_label
from obsqueue.servers import engine_label
from tests.conftest import IN_CI
from tests.every_engine.conftest import matrix_key
from tests.suite_runs import SuiteRun, render, run_all

ENGINES = shipped_engines()


def _label(engine: ShippedEngine) -> str:
    return safe_label(engine_label(engine.url))


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> dict[str, SuiteRun]:
    started = time.monotonic()
    runs = [SuiteRun(_label(e), [e.url], weight=e.weight) for e in ENGINES]
    run_all(runs, tmp_path_factory.mktemp("every-engine"), workers=2, timeout_s=600)
    wall_s = time.monotonic() - started
    table = {label: doc for run in runs for label, doc in run.results.items()}
    lines = [render(table), f"wall time {wall_s:.0f} s, 2 engines at a time:"]
    lines += [f"  {run.name}: {run.wall_s:.0f} s, exit {run.returncode}" for run in runs]
    for run in runs:
        for doc in run.results.values():
            lines += [f"  {p}" for p in mismatches(doc, _engine(run.name).expect)]
    pytestconfig.stash[matrix_key] = "\n".join(lines)
    return {run.name: run for run in runs}


def _engine(label: str) -> ShippedEngine:
    return next(e for e in ENGINES if _label(e) == label)


@pytest.mark.integration
@pytest.mark.parametrize("engine", ENGINES, ids=_label)
def test_engine_shows_the_matrix_it_declares(
    results: dict[str, SuiteRun], engine: ShippedEngine
) -> None:
    run = results[_label(engine)]
    doc: dict[str, Any] | None = run.results.get(_label(engine))
    assert doc is not None, f"{engine.url}: no results (exit {run.returncode})\n{run.tail()}"
    unavailable = all(p["outcome"] == "unknown" for p in doc["properties"])
    if unavailable and not IN_CI:
        pytest.skip(f"{engine.url} is not usable here (in CI it must be): {doc['properties'][0]}")
    problems = mismatches(doc, engine.expect)
    assert not problems, "\n".join(problems) + f"\n{run.tail(3000)}"
