"""One resolver from an engine URL as a user writes it to an engine URL that can be opened.

The conformance plugin, the benchmark harness and the CLI all go through ``resolve_engine``:

* a server engine URL with no host (``postgresql://``, ``rq+redis://``) gets a server from the
  first source that has one (``provision.py``): the URL in the environment variable of its kind
  (``OBSQUEUE_POSTGRES_URL`` …) when the caller passes one in ``env``, else a throwaway instance
  from the installed binaries, else a container (testcontainers) where Docker answers;
  ``owned=True`` (tests that kill the server) never takes the environment's server;
* a file engine URL with no path (``sqlite://``, ``huey+sqlite://``) gets a file in ``file_dir``;
* ``?server_durability=everysec|none`` on a server URL picks the throwaway server's persistence
  profile and is part of the engine's label (``redis-none``).

An unknown scheme raises ``InvalidMessageError`` listing the registered schemes, a missing driver
``EngineUnavailableError``; ``door.py`` refuses such URLs (and malformed ones) before a run
starts. A server that cannot be had is not an exception: the resolved engine carries
``unavailable`` with the reason, so a run reports it instead of failing every test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

from obsqueue.engines import engine_class, scheme_of
from obsqueue.engines.base import ObservationQueueEngine
from obsqueue.errors import ObsqueueError, redact_url
from obsqueue.servers.base import ServerHandle
from obsqueue.servers.provision import ENV_VARS, provision, source_order

__all__ = [
    "ResolvedEngine",
    "engine_label",
    "needs_server",
    "resolve_engine",
    "split_server_durability",
    "with_server_url",
]

DURABLE = "durable"


@dataclass
class ResolvedEngine:
    """An engine URL made openable: its label, the URL to open, and the server it runs on."""

    given: str
    label: str
    url: str
    engine_class: type[ObservationQueueEngine]
    server_durability: str = DURABLE
    server: ServerHandle | None = None
    unavailable: str | None = None

    def stop(self) -> None:
        """Stop the server this resolution started (an external one is left alone)."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __str__(self) -> str:
        return redact_url(self.url)


def split_server_durability(url: str) -> tuple[str, str]:
    """``redis://?server_durability=none`` -> (``redis://``, ``"none"``): the obsqueue-only query
    parameter that picks the throwaway server's persistence profile (default ``durable``)."""
    parts = urlsplit(url)
    kept, durability = [], DURABLE
    for pair in filter(None, parts.query.split("&")):
        name, _, value = pair.partition("=")
        if name == "server_durability":
            durability = value or DURABLE
        else:
            kept.append(pair)
    query = "&".join(kept)
    if query == parts.query:
        return url, durability
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + (
        f"?{query}" if query else ""
    ), durability


def engine_label(url: str) -> str:
    """The short name results files and tables use: the scheme, plus a non-durable profile."""
    plain, durability = split_server_durability(url)
    suffix = "" if durability == DURABLE else f"-{durability}"
    return scheme_of(plain).replace("+", "-") + suffix


def needs_server(url: str) -> bool:
    """True for a server engine URL with no host: obsqueue provides the server."""
    cls = engine_class(url)
    return cls.server_kind is not None and not urlsplit(url).netloc


def with_server_url(url: str, server_url: str) -> str:
    """``rq+redis://?lease_s=5`` + ``redis://127.0.0.1:6390/0`` ->
    ``rq+redis://127.0.0.1:6390/0?lease_s=5``: the server's address, the engine's own options
    kept (after the server's query, if it has one)."""
    own = urlsplit(url)
    parts = urlsplit(server_url)
    query = "&".join(q for q in (parts.query, own.query) if q)
    return urlunsplit((own.scheme, parts.netloc, parts.path, query, parts.fragment))


def names_no_file(url: str) -> bool:
    """``sqlite://`` or ``huey+sqlite://``: a file engine URL that leaves the file to obsqueue."""
    parts = urlsplit(url)
    return parts.scheme != "memory" and not parts.path.strip("/")


def resolve_engine(
    given: str,
    *,
    env: Mapping[str, str] | None = None,
    owned: bool = False,
    file_dir: Path | None = None,
) -> ResolvedEngine:
    """Resolve ``given`` (see the module docstring); the caller stops the result when done."""
    url, durability = split_server_durability(given)
    cls = engine_class(url)  # refuses an unknown scheme or a missing driver, once
    resolved = ResolvedEngine(given, engine_label(given), url, cls, durability)
    if needs_server(url):
        kind = cls.server_kind or ""
        env = env or {}
        env_url = env.get(ENV_VARS.get(kind, "")) if durability == DURABLE else None
        try:
            resolved.server = provision(
                kind,
                env_url=env_url,
                owned=owned,
                durability=durability,
                order=source_order(env),
            )
        except (ObsqueueError, OSError) as exc:
            resolved.unavailable = f"no {kind} server: {exc}"
        else:
            resolved.url = with_server_url(url, resolved.server.url)
    elif cls.server_kind is None and file_dir is not None and names_no_file(url):
        parts = urlsplit(url)
        query = f"?{parts.query}" if parts.query else ""  # the engine's options are kept
        resolved.url = f"{parts.scheme}:///{(file_dir / 'queue.db').resolve()}{query}"
    return resolved
