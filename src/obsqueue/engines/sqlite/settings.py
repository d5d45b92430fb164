"""The settings of ``sqlite://``: its URL, its options and their checks, and its statements.

Options are keyword-only or URL query parameters (``sqlite:///q.db?synchronous=NORMAL``); a URL
parameter wins over a keyword left at its default, and a conflict is an error. Every number is
checked by the shared validators of ``engines/options.py``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from obsqueue.engines.options import BUSY_TIMEOUT_S, positive_seconds
from obsqueue.errors import EngineUnavailableError, InvalidMessageError, redact_url
from obsqueue.sqlfile import load_queries

__all__ = [
    "check_library",
    "DEFAULTS",
    "SYNCHRONOUS_LEVELS",
    "Settings",
    "compose_queries",
    "parse_sqlite_url",
]

#: ``PRAGMA synchronous`` levels; the index is the number the pragma reads back.
SYNCHRONOUS_LEVELS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
MIN_SQLITE: Final = (3, 35, 0)  # RETURNING
DEFAULTS: Final[dict[str, Any]] = {
    "synchronous": "FULL",
    "busy_timeout_s": BUSY_TIMEOUT_S,
    "poll_interval_s": 0.01,
    "wakeup": "auto",
}
HINTS: Final = {
    "SQLITE_BUSY": "another connection held the write lock longer than busy_timeout_s; "
    "nothing was written: retry, or raise busy_timeout_s",
    "SQLITE_LOCKED": "the table is locked by another statement of this connection; retry",
    "SQLITE_NOTADB": "the file is not a SQLite database; point the URL at a new file or at a "
    "queue file",
    "SQLITE_CANTOPEN": "check that the path names a file in a directory that exists and is "
    "writable",
    "SQLITE_READONLY": "the file or its directory is read-only (WAL also creates -wal and -shm "
    "files beside it)",
    "SQLITE_FULL": "the disk is full; free space",
    "SQLITE_CORRUPT": "the file is corrupt; restore it or start a new one",
    "SQLITE_IOERR": "the file system failed a read or write; check the disk",
}


def compose_queries(namespace: str, synchronous: str) -> dict[str, str]:
    """The sections of ``queries.sql`` with the namespace and ``synchronous`` level put in."""
    if synchronous not in SYNCHRONOUS_LEVELS:
        raise InvalidMessageError("synchronous", f"must be one of {SYNCHRONOUS_LEVELS}")
    return {
        name: text.replace("{ns}", namespace).replace("{synchronous}", synchronous)
        for name, text in load_queries(__package__ or "", "queries.sql").items()
    }


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///q.db?synchronous=NORMAL`` -> (``"q.db"``, ``{"synchronous": "NORMAL"}``);
    ``sqlite:////tmp/q.db`` -> (``"/tmp/q.db"``, {})."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc or not path or path == ":memory:" or path.endswith("/"):
        raise InvalidMessageError(
            "url",
            "must name a file: sqlite:///relative.db or sqlite:////absolute/path.db "
            f"(use memory:// for a queue in process memory); got {redact_url(url)!r}",
        )
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise InvalidMessageError(
            "url",
            f"unknown parameter(s) {unknown} in {redact_url(url)!r}; known: {list(DEFAULTS)}",
        )
    return path, params


def _merge_option(name: str, keyword: object, params: dict[str, str]) -> object:
    """The URL's value when the keyword was left at its default; a conflict is an error."""
    if name not in params:
        return keyword
    text = params[name]
    if keyword != DEFAULTS[name] and str(keyword).upper() != text.upper():
        raise InvalidMessageError(name, f"given as {keyword!r} and as {text!r} in the URL")
    if isinstance(DEFAULTS[name], float):
        try:
            return float(text)
        except ValueError:
            raise InvalidMessageError(name, f"must be a number, got {text!r} in the URL") from None
    return text


def _check_synchronous(value: object) -> str:
    if not isinstance(value, str) or value.upper() not in SYNCHRONOUS_LEVELS:
        raise InvalidMessageError(
            "synchronous", f"must be one of {', '.join(SYNCHRONOUS_LEVELS)}; got {value!r}"
        )
    return value.upper()


def _check_wakeup(value: object) -> str:
    if value not in ("auto", "poll"):
        raise InvalidMessageError("wakeup", f"must be 'auto' or 'poll'; got {value!r}")
    return str(value)


@dataclass(frozen=True, slots=True)
class Settings:
    """An engine's file and options, checked: keywords merged with the URL's parameters."""

    path: str
    synchronous: str
    busy_timeout_s: float
    poll_interval_s: float
    wakeup: str

    @classmethod
    def of(cls, url: str, **keywords: object) -> Settings:
        path, params = parse_sqlite_url(url)
        merged = {name: _merge_option(name, value, params) for name, value in keywords.items()}
        return cls(
            path=path,
            synchronous=_check_synchronous(merged["synchronous"]),
            busy_timeout_s=positive_seconds(
                "busy_timeout_s", merged["busy_timeout_s"], at_most=3600
            ),
            poll_interval_s=positive_seconds(
                "poll_interval_s", merged["poll_interval_s"], at_most=1
            ),
            wakeup=_check_wakeup(merged["wakeup"]),
        )


def check_library() -> None:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise EngineUnavailableError(
            f"sqlite:// needs SQLite >= {'.'.join(map(str, MIN_SQLITE))} (for RETURNING); this "
            f"Python links SQLite {sqlite3.sqlite_version}: use a newer Python or pysqlite3"
        )
