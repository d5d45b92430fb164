"""Proof that the suite has teeth: every deliberately broken engine fails the property it
breaks, in the test meant to catch it and for the reason that test gives; and the correct
reference engines show exactly the matrix they declare.

Speed: each mutant runs only the tests of the property it breaks (``--obsqueue-property``;
mutants that break the same property share one run); the correct engines run the whole suite.
The runs go in parallel, two at a time.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest

from obsqueue.conformance.declared import mismatches
from tests.mutants.register import all_mutants, scheme_for
from tests.suite_runs import SuiteRun, render, run_all

CORRECT = {"memory": "memory://", "sqlite": "sqlite://"}


def _runs() -> list[SuiteRun]:
    by_property: dict[str, list[str]] = defaultdict(list)
    for cls in all_mutants():
        by_property[cls.BREAKS].append(f"{scheme_for(cls)}://")
    runs = [
        SuiteRun(f"correct-{label}", [url], weight=10 + len(label))
        for label, url in CORRECT.items()
    ]
    runs += [
        SuiteRun(
            f"mutants-{pid}",
            urls,
            args=["--obsqueue-property", pid, "--obsqueue-test-timeout", "30"],
            plugins=["tests.mutants.register"],
            weight=len(urls),
        )
        for pid, urls in sorted(by_property.items())
    ]
    return runs


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """label -> results document, over every mutant and the correct engines."""
    runs = run_all(_runs(), tmp_path_factory.mktemp("mutants"), workers=2)
    table: dict[str, dict[str, Any]] = {}
    for run in runs:
        assert run.returncode in (0, 1), f"{run.name}: exit {run.returncode}\n{run.tail()}"
        table.update(run.results)
    print("\n" + render(table, "mutant"))
    print("\n".join(f"{r.name}: {r.wall_s:.1f} s" for r in runs))
    return table


def _intended(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The test record whose name is ``name``, or starts with it followed by ``[``."""
    pattern = re.compile(re.escape(name) + (r"$" if name.endswith("]") else r"\["))
    return next((t for t in doc["tests"] if pattern.match(t["name"])), None)


@pytest.mark.integration
@pytest.mark.parametrize("mutant", all_mutants(), ids=scheme_for)
def test_mutant_is_caught_by_its_test_for_its_reason(
    matrix: dict[str, dict[str, Any]], mutant: Any
) -> None:
    label = scheme_for(mutant)
    assert label in matrix, f"no results for {label}"
    doc = matrix[label]
    prop = next(p for p in doc["properties"] if p["id"] == mutant.BREAKS)
    assert prop["outcome"] == "fail", f"{label} was not caught on {mutant.BREAKS}: {prop}"
    name, reason = mutant.CAUGHT_BY
    test = _intended(doc, name)
    assert test is not None, f"{label}: {name} did not run; ran {[t['name'] for t in doc['tests']]}"
    assert test["outcome"] == "fail", f"{label}: {name} did not fail: {test}"
    assert reason in test["reason"], f"{label}: {name} failed for another reason: {test['reason']}"


@pytest.mark.integration
@pytest.mark.parametrize("label", sorted(CORRECT))
def test_correct_engines_show_the_matrix_they_declare(
    matrix: dict[str, dict[str, Any]], label: str
) -> None:
    assert not mismatches(matrix[label]), mismatches(matrix[label])


def test_every_mutant_names_its_property_test_and_reason() -> None:
    for cls in all_mutants():
        assert re.fullmatch(r"P\d+", cls.BREAKS), cls
        name, reason = cls.CAUGHT_BY
        assert name.startswith("test_") and reason, cls
