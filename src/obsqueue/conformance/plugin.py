"""The obsqueue pytest plugin (entry point ``pytest11``): inert until asked.

Nothing happens unless ``--obsqueue-engine URL`` is given (the suite's tests are then
parametrized over the URLs) or a test module imports the suite and overrides the
``obsqueue_engine_spec`` fixture for a downstream engine::

    # downstream tests/test_conformance.py
    from obsqueue.conformance.suite import *  # noqa: F403

    # downstream tests/conftest.py
    @pytest.fixture
    def obsqueue_engine_spec(tmp_path):
        return EngineSpec("mything://...", {"namespace": "t1"})

A server engine URL without a host (``postgresql://``, ``redis://``, ``rq+redis://``) asks the
suite for a server: ``OBSQUEUE_POSTGRES_URL`` / ``OBSQUEUE_REDIS_URL`` / ``OBSQUEUE_AMQP_URL``
if set, else a throwaway instance. Tests that kill a server always start their own.
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from obsqueue.conformance.collector import Collector, EngineRun, label_key, record_key
from obsqueue.conformance.recorder import Recorder
from obsqueue.engines.base import Capability, ObservationQueueEngine
from obsqueue.servers.resolve import ResolvedEngine

__all__ = ["EngineTarget", "Recorder"]

PROPERTY_MARK = "obsqueue_property"
REQUIRES_MARK = "requires"
DEFAULT_TEST_TIMEOUT_S = 120.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("obsqueue", "obsqueue conformance suite")
    group.addoption(
        "--obsqueue-engine",
        action="append",
        default=[],
        metavar="URL",
        help="run the obsqueue conformance suite against this engine URL (repeatable); a "
        "server URL without a host (e.g. postgresql://) gets a throwaway server",
    )
    group.addoption(
        "--obsqueue-results",
        default=None,
        metavar="DIR",
        help="where to write conformance-<engine>.json (default: reports/results)",
    )
    group.addoption(
        "--obsqueue-test-timeout",
        default=DEFAULT_TEST_TIMEOUT_S,
        type=float,
        metavar="S",
        help="fail a suite test that runs longer than this (an engine whose iterator ignores "
        "stop would otherwise hang the run; needs pytest-timeout; default: %(default)s)",
    )
    group.addoption(
        "--obsqueue-property",
        action="append",
        default=[],
        metavar="ID",
        help="run only the suite tests of this property (P1..P16; repeatable); the results "
        "record the selection and are marked partial",
    )
    group.addoption(
        "--obsqueue-seed",
        default=None,
        type=int,
        metavar="N",
        help="seed for the random fault points (default: random, recorded in the results)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{PROPERTY_MARK}(*ids): the obsqueue property (P1..P16) a test checks"
    )
    config.addinivalue_line(
        "markers", f"{REQUIRES_MARK}(*capabilities): capabilities the engine must declare"
    )
    collector = Collector()
    seed = config.getoption("obsqueue_seed")
    collector.seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    config.stash[record_key] = collector


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Seed the random fault points of each suite test from the run's seed and the test's id,
    so ``--obsqueue-seed N`` repeats them; note its engine's label before any fixture runs."""
    if item.get_closest_marker(PROPERTY_MARK) is not None:
        random.seed(f"{item.config.stash[record_key].seed}:{item.nodeid}")
        engine = _engine_of(item)
        if engine is not None:
            item.stash[label_key] = engine[0]


def _engine_of(item: pytest.Item) -> tuple[str, str] | None:
    """(label, url) of a test parametrized by ``--obsqueue-engine``, else None."""
    callspec = getattr(item, "callspec", None)
    url = callspec.params.get("obsqueue_engine_url") if callspec is not None else None
    if url is None:
        return None
    urls = item.config.getoption("obsqueue_engine")
    return (_labels(urls)[urls.index(url)] if url in urls else _labels([url])[0]), str(url)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the tests of ``--obsqueue-property``; give every suite test a hard time limit
    (SIGALRM in the main thread), unless it has one."""
    _select_properties(config, items)
    _record_path_selection(config, items)
    seconds = config.getoption("obsqueue_test_timeout")
    if not seconds or not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker(PROPERTY_MARK) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(seconds, method="signal"))


def _select_properties(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = {
        p.strip().upper() for arg in config.getoption("obsqueue_property") for p in arg.split(",")
    }
    if not wanted:
        return
    from obsqueue.conformance.properties import property_by_id

    for pid in wanted:
        property_by_id(pid)  # an unknown id is an error that lists the known ones
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker(PROPERTY_MARK)
        (drop if marker is not None and not wanted & set(marker.args) else keep).append(item)
    if drop:
        items[:] = keep
        config.hook.pytest_deselected(items=drop)


def _record_path_selection(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A run of some of the suite's files, or of single tests (``path::name``), is a selection
    too: its results are partial and say which part ran."""
    suite_dir = Path(__file__).parent / "suite"
    ran = {Path(str(i.path)).name for i in items if i.get_closest_marker(PROPERTY_MARK)}
    if not ran:
        return
    shipped = {p.name for p in suite_dir.glob("test_*.py")}
    by_node = [a for a in config.invocation_params.args if "::" in a]
    missing = sorted(shipped - ran)
    if not missing and not by_node:
        return
    collector = config.stash[record_key]
    if not collector.selection:
        what = " ".join(by_node) if by_node else ", ".join(sorted(ran))
        collector.selection = {
            "paths": by_node or sorted(ran),
            "not_collected": missing,
            "description": f"only {what}",
        }


def _selection(config: pytest.Config) -> dict[str, Any]:
    parts = {
        "keyword": config.getoption("keyword", "") or None,
        "markexpr": config.getoption("markexpr", "") or None,
        "properties": sorted(config.getoption("obsqueue_property")) or None,
    }
    flags = {"keyword": "-k", "markexpr": "-m", "properties": "--obsqueue-property"}
    described = [
        f"{flags[k]} {v if isinstance(v, str) else ','.join(v)}" for k, v in parts.items() if v
    ]
    return {**parts, "description": " ".join(described) or "deselected by a plugin"}


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Record suite tests left out by ``-k``, ``-m`` or ``--obsqueue-property``: their results
    are then partial, and say so."""
    for item in items:
        marker = item.get_closest_marker(PROPERTY_MARK)
        engine = _engine_of(item) if marker is not None else None
        if marker is None or engine is None:
            continue
        collector = item.config.stash[record_key]
        if not collector.selection:
            collector.selection = _selection(item.config)
        collector.not_selected(item.name, tuple(marker.args), *engine)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    urls = metafunc.config.getoption("obsqueue_engine")
    if "obsqueue_engine_url" in metafunc.fixturenames and urls:
        labels = _labels(urls)
        metafunc.parametrize(
            "obsqueue_engine_url", urls, ids=labels, indirect=True, scope="session"
        )


def _labels(urls: list[str]) -> list[str]:
    from obsqueue.results import safe_label
    from obsqueue.servers import engine_label

    labels: list[str] = []
    for url in urls:
        base = safe_label(engine_label(url))
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


@dataclass
class EngineTarget:
    """The engine under test for a whole session: its label and its resolved URL and server."""

    label: str
    resolved: ResolvedEngine

    @property
    def url(self) -> str:
        return self.resolved.url

    @property
    def engine_class(self) -> type[ObservationQueueEngine]:
        return self.resolved.engine_class

    @property
    def server(self) -> Any:
        return self.resolved.server

    @property
    def unavailable(self) -> str | None:
        return self.resolved.unavailable

    @property
    def server_durability(self) -> str:
        return self.resolved.server_durability


@pytest.fixture(scope="session")
def obsqueue_engine_url(request: pytest.FixtureRequest) -> str:
    if not hasattr(request, "param"):
        pytest.skip(
            "unknown: no engine given: pass --obsqueue-engine URL, or override the "
            "obsqueue_engine_spec fixture"
        )
    return str(request.param)


@pytest.fixture(scope="session")
def obsqueue_target(
    request: pytest.FixtureRequest, obsqueue_engine_url: str
) -> Iterator[EngineTarget]:
    from obsqueue.servers import resolve_engine

    label = _label_of(request, obsqueue_engine_url)
    with resolve_engine(obsqueue_engine_url, env=os.environ) as resolved:
        yield EngineTarget(label, resolved)


def _label_of(request: pytest.FixtureRequest, url: str) -> str:
    urls = request.config.getoption("obsqueue_engine")
    return _labels(urls)[urls.index(url)] if url in urls else _labels([url])[0]


@pytest.fixture
def obsqueue_engine_spec(obsqueue_target: EngineTarget, tmp_path: Path) -> Any:
    """The engine under test on a fresh, empty store. Override it for a downstream engine."""
    from obsqueue.conformance.spec import fresh_spec

    if obsqueue_target.unavailable:
        pytest.skip(f"unknown: {obsqueue_target.unavailable}")
    return fresh_spec(obsqueue_target.url, tmp_path, {})


@pytest.fixture
def queue_engine(obsqueue_engine_spec: Any) -> Iterator[ObservationQueueEngine]:
    """An open engine on the fresh store; destroyed and closed after the test."""
    engine: ObservationQueueEngine = obsqueue_engine_spec.open()
    yield engine
    if engine.closed:
        engine = obsqueue_engine_spec.open()
    try:
        engine.destroy()
    finally:
        engine.close()


@pytest.fixture(autouse=True)
def _obsqueue_gate(request: pytest.FixtureRequest) -> None:
    """For suite tests: note which engine runs, and skip as *unsupported* when the engine does
    not declare a capability the test requires."""
    if request.node.get_closest_marker(PROPERTY_MARK) is None:
        return
    spec = request.getfixturevalue("obsqueue_engine_spec")
    cls = spec.engine_class
    run = _engine_run(request, spec, cls)
    request.node.stash[label_key] = run.label
    missing = [
        cap
        for mark in request.node.iter_markers(REQUIRES_MARK)
        for cap in mark.args
        if cap not in cls.capabilities
    ]
    if missing:
        names = ", ".join(Capability(c).value for c in missing)
        pytest.skip(f"unsupported: {run.label} lacks {names}")
    _expect_loss_without_durable_server(request)


#: What a server without its durable configuration is expected to show after kill -9, per
#: property: P4 loses acknowledged enqueues, P5 delivers acknowledged messages again.
NON_DURABLE_SERVER_ANOMALIES: dict[str, list[str]] = {"P4": ["lost"], "P5": ["duplicated"]}


def _expect_loss_without_durable_server(request: pytest.FixtureRequest) -> None:
    """A server run without its durable configuration may lose acknowledged writes when it is
    killed: tests that need SERVER_CRASH_DURABLE then expect exactly the anomalies of
    ``NON_DURABLE_SERVER_ANOMALIES`` (shown as expected-fail); any other is a failure, and a
    run that loses nothing is reported as holding what was expected to fail."""
    needs = {cap for mark in request.node.iter_markers(REQUIRES_MARK) for cap in mark.args}
    if Capability.SERVER_CRASH_DURABLE not in needs:
        return
    try:
        target: EngineTarget = request.getfixturevalue("obsqueue_target")
    except (pytest.FixtureLookupError, pytest.skip.Exception):
        return
    if target.server_durability != "durable":
        marker = request.node.get_closest_marker(PROPERTY_MARK)
        properties = set(marker.args) if marker is not None else set()
        Recorder(request.node).expect(
            {p: a for p, a in NON_DURABLE_SERVER_ANOMALIES.items() if p in properties},
            f"server persistence profile {target.server_durability!r} is not the engine's "
            "durable configuration",
        )


def _engine_run(
    request: pytest.FixtureRequest, spec: Any, cls: type[ObservationQueueEngine]
) -> EngineRun:
    collector = request.config.stash[record_key]
    try:
        target: EngineTarget | None = request.getfixturevalue("obsqueue_target")
    except pytest.FixtureLookupError:
        target = None
    except pytest.skip.Exception:
        target = None
    label = target.label if target is not None else cls.scheme or cls.__name__
    return collector.engine(
        label,
        spec,
        cls,
        target.server if target else None,
        target.server_durability if target else "durable",
    )


@pytest.fixture
def obsqueue_record(request: pytest.FixtureRequest) -> Recorder:
    """Attach anomaly counts and timings to this test's entry in the results JSON."""
    return Recorder(request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker(PROPERTY_MARK)
    if marker is not None:
        item.config.stash[record_key].record(item, marker.args, report, _engine_of(item))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    collector = config.stash.get(record_key, None)
    if collector is None or not collector.has_records():
        return
    terminalreporter.write_sep("=", "obsqueue conformance")
    for line in collector.matrix_lines():
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    collector = session.config.stash.get(record_key, None)
    if collector is None or not collector.has_records():
        return
    directory = session.config.getoption("obsqueue_results") or str(
        Path(session.config.invocation_params.dir) / "reports" / "results"
    )
    for path in collector.write(Path(directory)):
        session.config.stash.setdefault(_written_key, []).append(str(path))


_written_key = pytest.StashKey[list[str]]()
