"""Bad engine URLs are refused at the door: once, before any test or benchmark runs, exit 2.

Each case runs the real CLI in a subprocess and reads what a user would see on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from obsqueue.engines import registered_engines

REGISTERED = [f"{scheme}://" for scheme in sorted(registered_engines())]


def run(
    *args: str, cwd: Path, prelude: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``obsqueue ARGS`` in a fresh interpreter; ``prelude`` runs first (e.g. hides a driver)."""
    code = f"{prelude}\nimport sys\nfrom obsqueue.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def assert_refused(out: subprocess.CompletedProcess[str], *problems: str) -> None:
    """Exit 2, one refusal naming every problem and listing the registered schemes, no run."""
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stderr.count("refusing to run") == 1, out.stderr
    for problem in problems:
        assert problem in out.stderr, out.stderr
    listed = next(line for line in out.stderr.splitlines() if line.startswith("registered"))
    assert all(scheme in listed for scheme in REGISTERED), listed
    assert "Traceback" not in out.stderr
    assert out.stdout == "", "nothing may run before the refusal"


BAD_URLS = [
    pytest.param("nosuch://x", "nosuch://x: unknown scheme nosuch://", id="unknown-scheme"),
    pytest.param("sqlite", "must look like scheme://", id="no-scheme"),
    pytest.param("redis://h:port/0", "malformed URL: Port could not be cast", id="bad-port"),
    pytest.param("postgresql://[::1/db", "malformed URL: Invalid IPv6 URL", id="bad-brackets"),
    pytest.param(
        "redis://?server_durability=sometimes",
        "a redis server has ['durable', 'everysec', 'none']",
        id="bad-profile",
    ),
    pytest.param(
        "sqlite://?server_durability=none",
        "applies only to engines with a server",
        id="profile-without-server",
    ),
]


@pytest.mark.acceptance
@pytest.mark.parametrize(("url", "problem"), BAD_URLS)
@pytest.mark.parametrize(
    "command", [["conformance"], ["bench", "--workload", "drain"]], ids=["conf", "bench"]
)
def test_a_bad_url_is_refused_before_anything_runs(
    tmp_path: Path, command: list[str], url: str, problem: str
) -> None:
    out = run(*command, "memory://", url, "--results", "res", cwd=tmp_path)
    assert_refused(out, problem)
    assert "memory://" not in out.stderr.split("registered")[0], "a good URL is not a problem"
    assert not (tmp_path / "res").exists()


@pytest.mark.acceptance
def test_every_bad_url_is_named_in_one_refusal(tmp_path: Path) -> None:
    out = run("conformance", "nosuch://x", "sqlite://", "redis://h:port", cwd=tmp_path)
    assert_refused(out, "nosuch://x: unknown scheme", "redis://h:port: malformed URL")
    assert "sqlite://:" not in out.stderr


@pytest.mark.acceptance
def test_a_missing_driver_is_refused_with_the_extra_to_install(tmp_path: Path) -> None:
    """psycopg hidden from the child interpreter stands for a machine without the extra."""
    out = run(
        "conformance",
        "postgresql://",
        cwd=tmp_path,
        prelude="import sys; sys.modules['psycopg'] = None",
    )
    assert_refused(out, "postgresql://: postgresql:// needs: pip install 'obsqueue[postgres]'")


@pytest.mark.acceptance
def test_a_password_in_a_refused_url_is_redacted(tmp_path: Path) -> None:
    out = run("bench", "--workload", "drain", "nosuch://user:s3cret@host/db", cwd=tmp_path)
    assert_refused(out, "nosuch://user:***@host/db")
    assert "s3cret" not in out.stderr


@pytest.mark.acceptance
def test_a_bad_server_source_order_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "OBSQUEUE_SERVER_SOURCES": "throwaway,cloud"}
    out = run("conformance", "memory://", cwd=tmp_path, env=env)
    assert_refused(out, "OBSQUEUE_SERVER_SOURCES: 'throwaway,cloud'")


@pytest.mark.acceptance
def test_good_urls_pass_the_door(tmp_path: Path) -> None:
    """The door lets a good run through: memory:// runs one property's tests and writes JSON."""
    out = run("conformance", "memory://", "-q", "-k", "TestClose", "--results", "res", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    doc = json.loads((tmp_path / "res" / "conformance-memory.json").read_text())
    assert {p["id"]: p["outcome"] for p in doc["properties"]}["P16"] == "pass"
