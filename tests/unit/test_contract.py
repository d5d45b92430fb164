"""The public surface, validation, the registry and the error tree (memory engine, no sockets)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import obsqueue
from obsqueue import (
    EngineClosedError,
    EngineUnavailableError,
    InvalidMessageError,
    ObsqueueError,
    PendingMessage,
    StaleClaimError,
    open_engine,
)
from obsqueue.engines import engine_class, register_engine, registered_engines
from obsqueue.engines.base import (
    Capability,
    EngineOptions,
    ObservationQueueEngine,
    encode_message,
    normalize_session_id,
)
from obsqueue.engines.memory import MemoryEngine
from obsqueue.errors import redact_url


def test_public_surface_is_exactly_all() -> None:
    # (pytest adds "@py_*" names to modules of plugin distributions it rewrites)
    public = {n for n in dir(obsqueue) if not n.startswith(("_", "@"))}
    modules = {"engines", "errors", "results", "conformance", "servers", "benchmarks", "cli"}
    modules |= {"sqlfile", "reporting", "probes"}
    assert public - modules == set(obsqueue.__all__) - {"__version__"}


def test_importing_obsqueue_imports_no_driver() -> None:
    code = (
        "import sys, obsqueue, obsqueue.engines; "
        "print([m for m in ('psycopg', 'redis', 'rq', 'dramatiq', 'huey') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_share_one_base() -> None:
    for error in (InvalidMessageError, EngineUnavailableError, EngineClosedError, StaleClaimError):
        assert issubclass(error, ObsqueueError)
    assert issubclass(InvalidMessageError, ValueError)
    assert str(InvalidMessageError("payload", "bad")) == "payload: bad"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:hunter2@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("sqlite:///obs.db", "sqlite:///obs.db"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(InvalidMessageError, match=r"unknown scheme nope://.*sqlite://"):
        open_engine("nope://x")


def test_url_without_scheme_is_rejected() -> None:
    with pytest.raises(InvalidMessageError, match="url"):
        open_engine("obs.db")


def test_unknown_option_is_named() -> None:
    with pytest.raises(InvalidMessageError, match="lease_ms"):
        open_engine("memory://", lease_ms=5)


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    register_engine("broken", "obsqueue_no_such_module:Engine")
    with pytest.raises(EngineUnavailableError, match="broken:// needs"):
        engine_class("broken://x")


def test_builtin_schemes_are_registered() -> None:
    schemes = set(registered_engines())
    assert {
        "memory",
        "sqlite",
        "postgresql",
        "redis",
        "rq+redis",
        "dramatiq+redis",
        "huey+redis",
        "huey+sqlite",
    } <= schemes


def test_incomplete_engine_fails_when_constructed() -> None:
    class Incomplete(ObservationQueueEngine):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete("x://")  # type: ignore[abstract]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"lease_s": 0}, "lease_s"),
        ({"lease_s": float("inf")}, "lease_s"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"namespace": "has space"}, "namespace"),
        ({"namespace": "x" * 41}, "namespace"),
        ({"retry_backoff_s": -1}, "retry_backoff_s"),
        ({"connect_timeout_s": "5"}, "connect_timeout_s"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidMessageError, match=field):
        EngineOptions(**options)  # type: ignore[arg-type]


def test_session_ids_are_normalised_to_str() -> None:
    assert normalize_session_id(42) == "42"
    assert normalize_session_id("s") == "s"


def test_payload_encoding_is_compact_utf8_json() -> None:
    text = encode_message(PendingMessage("observation", None, {"a": "é", "b": [1, 2]}))
    assert text == '{"a":"é","b":[1,2]}'
    assert json.loads(text) == {"a": "é", "b": [1, 2]}


def test_oversized_payload_is_rejected() -> None:
    with pytest.raises(InvalidMessageError, match=r"payload.*limit"):
        encode_message(PendingMessage("observation", None, "x" * (9 * 1024 * 1024)))


def test_lone_surrogate_is_rejected() -> None:
    with pytest.raises(InvalidMessageError, match="surrogate"):
        encode_message(PendingMessage("observation", None, {"s": "\ud800"}))


def test_memory_engine_declares_no_cross_process_durability() -> None:
    assert Capability.MULTI_PROCESS not in MemoryEngine.capabilities
    assert Capability.DURABLE_ENQUEUE not in MemoryEngine.capabilities
    assert Capability.FENCING in MemoryEngine.capabilities


def test_retry_delay_grows_and_is_capped() -> None:
    engine = MemoryEngine(retry_backoff_s=1.0, retry_backoff_max_s=8.0)
    delays = [engine.retry_delay_ms(a) for a in range(1, 8)]
    assert 500 <= delays[0] <= 1000
    assert all(d <= 8000 for d in delays)
    assert 4000 <= delays[-1] <= 8000
    assert MemoryEngine(retry_backoff_s=0).retry_delay_ms(3) == 0


def test_repr_redacts_and_shows_state() -> None:
    engine = MemoryEngine("memory://")
    assert "open" in repr(engine)
    engine.close()
    assert "closed" in repr(engine)
