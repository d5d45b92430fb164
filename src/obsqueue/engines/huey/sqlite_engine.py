"""``huey+sqlite:///path`` — Huey's ``SqliteHuey`` plus obsqueue's glue tables in the same file.

The protocol is ``huey/engine.py``'s (its docstring lists what Huey gives and what obsqueue adds);
this variant keeps the glue in SQLite (``huey/sqlite_store.py``) and imports no Redis client.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from huey import SqliteHuey

from obsqueue.engines.describe import installed_version
from obsqueue.engines.huey.engine import COMMON_GLUE, HueyEngine, huey_name
from obsqueue.engines.huey.sqlite_store import SqliteGlue
from obsqueue.engines.options import BUSY_TIMEOUT_S, positive_seconds
from obsqueue.engines.types import Capability
from obsqueue.errors import EngineUnavailableError, InvalidMessageError, redact_url

__all__ = ["HueySqliteEngine"]

T = TypeVar("T")


class HueySqliteEngine(HueyEngine):
    """Huey's ``SqliteHuey`` (rows of its ``task`` table per session) plus glue tables in the
    same file. Not SERVER_CRASH_DURABLE: there is no server; power-loss durability rests on
    ``synchronous=FULL``, which ``describe()`` reports."""

    scheme: ClassVar[str] = "huey+sqlite"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {
        Capability.SERVER_CRASH_DURABLE
    }
    server_kind: ClassVar[str | None] = None
    glue: ClassVar[tuple[str, ...]] = (
        *COMMON_GLUE,
        "glue tables obsq_huey_* in Huey's SQLite file",
        "wake-up by polling PRAGMA data_version",
    )

    SESSION_CACHE: ClassVar[int] = 32  # each SqliteHuey holds a connection (3 fds with WAL)

    def __init__(self, url: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S, **options: Any) -> None:
        super().__init__(url, **options)
        self._busy_timeout_s = positive_seconds("busy_timeout_s", busy_timeout_s)
        self._path = _sqlite_path(url)
        self._glue = self._call(
            lambda: SqliteGlue(self._path, self.options.namespace, self._busy_timeout_s)
        )
        self._store = self._glue
        try:  # the namespace's own Huey instance creates Huey's tables and serves describe()
            self._root = self._call(
                lambda: self._new_huey(huey_name(self.options.namespace, ""), create=True)
            )
        except BaseException:
            self._glue.close()
            raise

    def _new_huey(self, name: str, create: bool = False) -> Any:
        return SqliteHuey(
            name,
            results=False,
            filename=self._path,
            fsync=True,
            strict_fifo=True,
            timeout=self._busy_timeout_s,
            create_tables=create,
        )

    def _drop_huey(self, huey: Any) -> None:
        huey.storage.close()

    def _raw_queue(self, huey: Any) -> list[bytes]:
        return self._glue.huey_tasks(huey.storage.name)

    def _call(self, op: Callable[[], T], *, repeatable: bool = False) -> T:
        """One try: a SQLite error is a local fault (a lock held too long, a full disk)."""
        try:
            return op()
        except sqlite3.Error as exc:
            self._check_open()
            raise EngineUnavailableError(
                f"SQLite file {self._path} failed: {exc}; check that the directory "
                "exists and is writable, and that no process holds a lock for long"
            ) from exc

    def describe(self) -> dict[str, Any]:
        self._check_open()
        glue = self._call(self._glue.pragmas)
        sync = self._call(lambda: self._root.storage.sql("PRAGMA synchronous", results=True)[0][0])
        return {
            "library": {"huey": installed_version("huey"), "sqlite": sqlite3.sqlite_version},
            "client": {"busy_timeout_s": self._busy_timeout_s, "path": self._path},
            "server": None,
            "durability": {**glue, "huey_synchronous": sync},
        }

    def _close(self) -> None:
        self._release_hueys()
        self._drop_huey(self._root)
        self._glue.close()


def _sqlite_path(url: str) -> str:
    """``huey+sqlite:///obs.db`` -> ``obs.db``; ``huey+sqlite:////tmp/q.db`` -> ``/tmp/q.db``."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc or not path or path == ":memory:":
        raise InvalidMessageError(
            "url", f"must name a file, e.g. huey+sqlite:///obs.db; got {redact_url(url)!r}"
        )
    return path
