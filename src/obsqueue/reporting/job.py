"""``obsqueue scorecard``: the main job — probes, conformance and quick benchmarks, then the report.

Every step is a subprocess of the CLI (``python -m obsqueue.probes``, ``obsqueue conformance``,
``obsqueue bench --profile quick``), so this module imports no engine, suite or harness code:

1. per engine, in parallel (``--jobs``, default: the cores, at most 2): the probes, then the
   conformance suite;
2. then the quick benchmarks one engine at a time, so the job's own load does not skew them —
   if this obsqueue's ``bench`` has no ``--profile`` (the harness of issue 9 not landed yet),
   each benchmark step is *not measured* with that reason;
3. a run record ``scorecard-run.json`` (steps, status, wall time, commit), then ``build_report``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console

from obsqueue.reporting.matrix import terminal_matrix
from obsqueue.reporting.progress import Display, Step
from obsqueue.results import environment, peers_once_per_backend, write_results

__all__ = [
    "bench_unsupported",
    "check_engines",
    "default_engines",
    "git_commit",
    "longest_first",
    "run_scorecard",
]

CLI = (sys.executable, "-m", "obsqueue.cli")
PROBES = (sys.executable, "-m", "obsqueue.probes")
STEP_TIMEOUT_S = 1200.0


def _output(argv: Sequence[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True, timeout=120)
    return done.stdout.strip()


def git_commit(cwd: Path) -> str | None:
    """``HEAD``'s sha (``+dirty`` with uncommitted changes), or None outside a git checkout."""
    try:
        sha = _output(["git", "rev-parse", "HEAD"], cwd)
        dirty = _output(["git", "status", "--porcelain", "--untracked-files=no"], cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def check_engines(urls: Sequence[str]) -> str | None:
    """None when every URL names a usable engine, else what is wrong (asked of the probes)."""
    done = subprocess.run(
        [*PROBES, "--check", *urls], capture_output=True, text=True, timeout=120, check=False
    )
    return None if done.returncode == 0 else done.stderr.strip() or f"exit {done.returncode}"


def default_engines() -> list[str]:
    """Every registered engine (``python -m obsqueue.probes --list``: the probes may read the
    registry; this module may not)."""
    return _output([*PROBES, "--list"]).splitlines()


def longest_first(urls: Sequence[str]) -> list[str]:
    """``urls`` with the shipped engines whose suites take longest first (their ``weight``), so
    two engines at a time end together instead of one long suite running alone at the end."""
    try:
        lines = _output([*PROBES, "--weights"]).splitlines()
    except (OSError, subprocess.SubprocessError):
        return list(urls)
    weights = {url: float(w) for w, _, url in (line.partition(" ") for line in lines) if url}
    return sorted(urls, key=lambda url: -weights.get(url, 1.0))


def bench_unsupported() -> str | None:
    """Why ``obsqueue bench --profile quick URL…`` cannot run here, or None when it can."""
    try:
        out = subprocess.run(
            [*CLI, "bench", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`obsqueue bench --help` did not run: {exc}"
    if "--profile" not in out.stdout:
        return (
            "this obsqueue's `bench` has no --profile quick (the benchmark harness, "
            "issue 9, has not landed): no benchmark ran"
        )
    return None


def _run(step: Step, argv: Sequence[str], display: Display) -> None:
    step.status, step.started = "running", time.monotonic()
    display.update()
    env = os.environ | {"PYTEST_ADDOPTS": "--color=no", "PYTHONUNBUFFERED": "1"}
    try:
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        ) as proc:
            timer = threading.Timer(STEP_TIMEOUT_S, proc.kill)
            timer.start()
            assert proc.stdout is not None
            for line in proc.stdout:
                step.feed(line)
                display.update()
            code = proc.wait()
            timer.cancel()
    except OSError as exc:
        step.status, step.reason = "failed", f"did not start: {exc}"
    else:
        _conclude(step, code)
    step.finished = time.monotonic()
    display.finished(step)


def _conclude(step: Step, code: int) -> None:
    if code == 0:
        step.status = "ok"
    elif code < 0:
        step.status, step.reason = "failed", f"killed after {STEP_TIMEOUT_S:.0f} s (signal {-code})"
    elif step.step == "conformance" and code == 1 and step.done:
        step.status, step.reason = "ok", f"{step.failed} test(s) failed: see the matrix"
    else:
        step.status = "failed"
        step.reason = f"exit {code}: " + " / ".join(step.tail[-3:])


def _engine_steps(
    url: str, results: Path, steps: dict[tuple[str, str], Step], display: Display
) -> None:
    _run(
        steps[url, "probes"],
        [*PROBES, url, "--results", str(results)],
        display,
    )
    _run(steps[url, "conformance"], [*CLI, "conformance", url, "--results", str(results)], display)


def run_scorecard(
    urls: Sequence[str], results: Path, out: Path, *, jobs: int, console: Console
) -> int:
    """Run the main job; returns 0 when every step ran (test failures are results, not errors)."""
    from obsqueue.reporting.build import build_report

    started, wall = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.monotonic()
    commit = git_commit(Path.cwd())
    steps = {(u, s): Step(u, s) for u in urls for s in ("probes", "conformance", "bench")}
    no_bench = bench_unsupported()
    with Display(list(steps.values()), console) as display:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            order = longest_first(urls)
            list(pool.map(lambda u: _engine_steps(u, results, steps, display), order))
        with_peers = peers_once_per_backend(urls)
        for url in urls:
            if no_bench:
                step = steps[url, "bench"]
                step.status, step.reason = "not measured", no_bench
                display.finished(step)
                continue
            references = "all" if url in with_peers else "ceiling"
            bench = ["bench", "--profile", "quick", "--references", references]
            _run(steps[url, "bench"], [*CLI, *bench, url, "--results", str(results)], display)
    record = {
        "command": "obsqueue scorecard " + " ".join(urls),
        "started_at": started,
        "wall_s": round(time.monotonic() - wall, 1),
        "commit": commit,
        "environment": environment(),
        "jobs": jobs,
        "tasks": [s.as_record() for s in steps.values()],
    }
    write_results(results / "scorecard-run.json", "scorecard-run", record)
    report = build_report(results, out)
    if report.matrix is not None:
        print(terminal_matrix(report.matrix))
    print(f"scorecard: {report.html}  ({report.markdown}; charts in {out / 'charts'})")
    print(f"main job wall time: {record['wall_s']:.0f} s; {len(report.missing)} cells not measured")
    return 0 if all(s.status in ("ok", "not measured") for s in steps.values()) else 1
