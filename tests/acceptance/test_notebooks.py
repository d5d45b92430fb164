"""The notebooks in notebooks/ run top to bottom against the committed results (nbmake), so
they cannot rot: a renamed column or a results file the reader no longer understands fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_is_a_scorecard_and_a_comparison_notebook() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"scorecard.ipynb", "compare-runs.ipynb"}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_against_the_committed_results(notebook: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", str(notebook), "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_committed_notebooks_carry_no_outputs() -> None:
    import nbformat

    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        assert all(
            not c.get("outputs") and not c.get("execution_count")
            for c in cells
            if c.cell_type == "code"
        ), path
