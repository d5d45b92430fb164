"""Is a payload readable as plain text in the backend's storage files? Measured, not assumed.

A canary string (random per run) is enqueued into a fresh store of the engine: a new SQLite file
in a temporary directory, or a *throwaway* server that obsqueue started (never a shared one,
whose files are not ours to read). After the write has had time to reach disk, every file under
the store's directory — the SQLite database and its WAL, PostgreSQL's data directory (WAL and
heap), Redis's AOF/RDB, RabbitMQ's message store — is searched for the canary's bytes.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CANARY_PREFIX", "PrivacyResult", "scan_for", "storage_dir"]

CANARY_PREFIX = "obsq-canary-"
#: Redis ``appendfsync everysec`` writes the AOF within a second; give every backend that long.
SETTLE_S = 1.5


@dataclass
class PrivacyResult:
    """Where the canary was found in plain text (relative paths), and what was searched."""

    storage: str | None  # a description of what was searched, None when nothing is on disk
    files_scanned: int = 0
    bytes_scanned: int = 0
    found_in: list[str] = field(default_factory=list)

    @property
    def plain_text(self) -> bool | None:
        """True: readable; False: searched, not found; None: there are no storage files."""
        if self.files_scanned == 0:
            return None
        return bool(self.found_in)

    def as_dict(self) -> dict[str, Any]:
        return {
            "plain_text": self.plain_text,
            "storage": self.storage,
            "files_scanned": self.files_scanned,
            "bytes_scanned": self.bytes_scanned,
            "found_in": self.found_in,
            "method": "canary payload enqueued into a fresh store, storage files searched "
            "for its bytes",
        }


def new_canary() -> str:
    return CANARY_PREFIX + secrets.token_hex(12)


def scan_for(needle: bytes, root: Path, storage: str) -> PrivacyResult:
    """Search every regular file under ``root`` for ``needle``."""
    result = PrivacyResult(storage)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        result.files_scanned += 1
        result.bytes_scanned += len(data)
        if needle in data:
            result.found_in.append(str(path.relative_to(root)))
    return result


def storage_dir(server_workdir: Path | None, file_dir: Path, server_kind: str | None) -> Path:
    """The directory holding the store's files: the server's, or the embedded file's."""
    if server_kind is not None:
        if server_workdir is None:
            raise ValueError("a server engine needs a throwaway server to be searched")
        return server_workdir
    return file_dir


def temp_store_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="obsq-privacy-")


def settle() -> None:
    time.sleep(SETTLE_S)
