"""The scorecard's HTML in a real browser: Debian's headless Chromium, driven over the DevTools
protocol by Playwright (``executable_path``: Playwright downloads no browser of its own).

The page must render, every chart must load, and the console must stay clean; a screenshot is
kept in ``tmp/artefacts/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import require_binary

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = ROOT / "tmp" / "artefacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class PageCheck:
    title: str = ""
    sections: list[str] = field(default_factory=list)
    matrix_rows: int = 0
    images: list[tuple[bool, int]] = field(default_factory=list)  # (complete, naturalWidth)
    problems: list[str] = field(default_factory=list)  # console errors, page errors, failed loads


def open_in_chromium(page_path: Path, profile: Path, screenshot: Path) -> PageCheck:
    from playwright.sync_api import sync_playwright

    check = PageCheck()
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: (
                    check.problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: check.problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: check.problems.append(f"failed load: {r.url[:80]}"))
            page.goto(page_path.as_uri(), wait_until="load")
            check.title = page.title()
            check.sections = page.eval_on_selector_all(
                "section h2", "hs => hs.map(h => h.textContent)"
            )
            check.matrix_rows = page.eval_on_selector_all("#matrix tbody tr", "rs => rs.length")
            check.images = [
                (bool(c), int(w))
                for c, w in page.eval_on_selector_all(
                    "img", "is => is.map(i => [i.complete, i.naturalWidth])"
                )
            ]
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return check


@pytest.fixture(scope="module")
def chromium() -> Path:
    require_binary(
        str(CHROMIUM) if CHROMIUM.exists() else None,
        "Debian's chromium (apt-get install chromium; `nox -s tests` installs it)",
    )
    return CHROMIUM


@pytest.fixture(scope="module")
def scorecard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the committed results plus the schema-2 fixtures (so every chart kind is
    drawn), made by the CLI as a user runs it."""
    results = tmp_path_factory.mktemp("results")
    for source in (ROOT / "reports" / "results", ROOT / "tests" / "fixtures" / "results-v2"):
        for f in source.glob("*.json"):
            shutil.copy(f, results)
    out = tmp_path_factory.mktemp("report")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "obsqueue.cli",
            "report",
            "--results",
            str(results),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out / "scorecard.html"


def test_scorecard_renders_every_chart_without_console_errors(
    chromium: Path, scorecard: Path, tmp_path: Path
) -> None:
    shot = ARTEFACTS / "scorecard.png"
    check = open_in_chromium(scorecard, tmp_path / "profile", shot)
    assert check.problems == []
    assert check.title == "obsqueue scorecard"
    assert check.sections[:2] == ["Which engine for whom", "Conformance matrix: engine by property"]
    assert check.matrix_rows == len(list((ROOT / "reports" / "results").glob("conformance-*.json")))
    charts = len(list((scorecard.parent / "charts").glob("*.png")))
    assert len(check.images) == charts >= 7
    assert all(complete and width > 0 for complete, width in check.images)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_the_check_catches_a_broken_chart_and_a_console_error(
    chromium: Path, scorecard: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.html"
    html = scorecard.read_text().replace(
        "</body>",
        '<img src="data:image/png;base64,AAAA"><script>console.error("boom")</script></body>',
    )
    broken.write_text(html)
    check = open_in_chromium(broken, tmp_path / "profile", tmp_path / "broken.png")
    assert "console error: boom" in check.problems
    assert (True, 0) in check.images
