"""Per-operation costs of one obsqueue engine, as a pytest-benchmark suite (``nox -s microbench``).

``pytest microbench --microbench-engine=URL [--microbench-results=DIR]`` benchmarks the engine
that ``URL`` names (default ``memory://``), opened only through ``obsqueue.engines.open_engine``
on a server from ``obsqueue.servers.resolve_engine`` — a URL with no host gets a throwaway
server (or the one ``$OBSQUEUE_<KIND>_URL`` names), ``sqlite://`` a file in a temporary
directory. With ``--microbench-results`` the JSON goes to ``DIR/microbench-<engine label>.json``
(unless ``--benchmark-json`` says otherwise), with the engine's label, URL and ``describe()``
under ``"obsqueue"``. An engine that cannot be had here is skipped with the reason (in CI,
``CI`` set, it fails).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obsqueue.engines import open_engine
from obsqueue.engines.base import ObservationQueueEngine
from obsqueue.errors import redact_url
from obsqueue.servers import engine_label, resolve_engine

DESCRIBED = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("obsqueue microbench")
    group.addoption("--microbench-engine", default="memory://", help="engine URL to measure")
    group.addoption(
        "--microbench-results",
        default=None,
        help="directory for microbench-<engine>.json (default: no JSON unless --benchmark-json)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    results = config.getoption("--microbench-results")
    if results and config.getoption("benchmark_json", None) is None:
        label = engine_label(config.getoption("--microbench-engine"))
        Path(results).mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = Path(results) / f"microbench-{label}.json"


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    url = config.getoption("--microbench-engine")
    output_json["obsqueue"] = {
        "kind": "microbench",
        "engine": engine_label(url),
        "url": url,
        "describe": config.stash.get(DESCRIBED, None),
    }


@pytest.fixture(scope="session")
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObservationQueueEngine]:
    """The engine under measurement, in a namespace of its own, destroyed at the end."""
    given = request.config.getoption("--microbench-engine")
    with resolve_engine(given, env=os.environ, file_dir=tmp_path_factory.mktemp("mb")) as found:
        if found.unavailable:
            message = f"{given}: {found.unavailable}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        opened = open_engine(found.url, namespace=f"mb{uuid.uuid4().hex[:10]}")
        try:
            described = opened.describe()
            described["url"] = redact_url(found.url)
            request.config.stash[DESCRIBED] = described
            yield opened
            opened.destroy()
        finally:
            opened.close()


@pytest.fixture
def session_id() -> str:
    """A session of its own for each benchmark."""
    return f"mb-{uuid.uuid4().hex[:12]}"
