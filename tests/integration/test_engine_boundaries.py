"""What a user sees at the engines' boundaries when a server cannot be reached."""

from __future__ import annotations

import subprocess
import sys

import pytest

from obsqueue.servers.base import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_unreachable_postgres_is_one_error_and_no_pool_warnings() -> None:
    # nothing listens on a free port: every connection attempt of the pool is refused
    url = f"postgresql://obsq@127.0.0.1:{free_port()}/obsq"
    code = (
        "from obsqueue import open_engine, EngineUnavailableError\n"
        "try:\n"
        f"    open_engine({url!r}, connect_timeout_s=1)\n"
        "except EngineUnavailableError as exc:\n"
        "    print('unavailable:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("unavailable: PostgreSQL at ")
    assert out.stderr == ""  # psycopg_pool's "couldn't stop thread" and connect warnings
