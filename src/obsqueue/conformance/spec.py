"""How the suite names the engine under test, so that any process can open it again.

An ``EngineSpec`` is a URL plus options, JSON-serialisable, so child processes (producers and
consumers the suite SIGKILLs) open exactly the engine the test opened. ``registrations`` carries
schemes registered at runtime (``obsqueue.engines.register_engine``) into those children.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from obsqueue.engines import engine_class, open_engine, register_engine, runtime_registrations
from obsqueue.engines.base import ObservationQueueEngine
from obsqueue.errors import redact_url

__all__ = [
    "SUITE_DEFAULTS",
    "EngineSpec",
    "fresh_spec",
]

#: Options the suite opens engines with unless a test says otherwise: short backoff so retries
#: are quick, a lease long enough that nothing expires unless a test wants it to.
SUITE_DEFAULTS: dict[str, Any] = {
    "lease_s": 10.0,
    "max_attempts": 3,
    "retry_backoff_s": 0.0,
    "connect_timeout_s": 5.0,
}


@dataclass(frozen=True)
class EngineSpec:
    """An engine URL and the options to open it with."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)
    registrations: dict[str, str] = field(default_factory=dict)

    @property
    def engine_class(self) -> type[ObservationQueueEngine]:
        self.register()
        return engine_class(self.url)

    def register(self) -> None:
        for scheme, target in self.registrations.items():
            register_engine(scheme, target)

    def open(self, **overrides: Any) -> ObservationQueueEngine:
        """Open a new engine object on the same store."""
        self.register()
        return open_engine(self.url, **{**self.options, **overrides})

    def with_options(self, **options: Any) -> EngineSpec:
        return replace(self, options={**self.options, **options})

    def to_json(self) -> str:
        return json.dumps(
            {"url": self.url, "options": self.options, "registrations": self.registrations}
        )

    @classmethod
    def from_json(cls, text: str) -> EngineSpec:
        data = json.loads(text)
        return cls(data["url"], dict(data["options"]), dict(data.get("registrations", {})))

    def __str__(self) -> str:
        return redact_url(self.url)


def fresh_spec(base_url: str, tmp_dir: Path, options: dict[str, Any]) -> EngineSpec:
    """A spec on a fresh, empty store: a new file for file engines (``X:///path``), a new
    namespace for server engines; the suite's defaults under ``options``."""
    parts = urlsplit(base_url)
    cls = engine_class(base_url)
    url = base_url
    if cls.server_kind is None and not parts.netloc and parts.scheme != "memory":
        path = (tmp_dir / "queue.db").resolve()
        url = f"{parts.scheme}:///{path}" + (f"?{parts.query}" if parts.query else "")
    namespace = f"t{uuid.uuid4().hex[:12]}"
    merged = {**SUITE_DEFAULTS, "namespace": namespace, **options}
    return EngineSpec(url, merged, runtime_registrations())
