"""The obsqueue error tree.

Every error obsqueue raises on purpose derives from one base class::

    ObsqueueError
    ├── InvalidMessageError (also a ValueError)  an argument is invalid; nothing was written
    ├── EngineUnavailableError                   the backend cannot be reached, or its driver
    │                                            is missing
    ├── EngineClosedError                        the engine was used after close()
    └── StaleClaimError                          the claim a message was delivered under is no
                                                 longer held (it expired and was re-delivered,
                                                 or was reset)

Messages name the field or the URL (with its password redacted) and say what to do.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "EngineClosedError",
    "EngineUnavailableError",
    "InvalidMessageError",
    "ObsqueueError",
    "StaleClaimError",
    "redact_url",
    "stale_claim",
]


class ObsqueueError(Exception):
    """Base class of every error obsqueue raises on purpose."""


class InvalidMessageError(ObsqueueError, ValueError):
    """An argument is invalid; nothing was written and the engine keeps working."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class EngineUnavailableError(ObsqueueError):
    """The engine's backend cannot be reached, or the driver it needs is not installed."""


class EngineClosedError(ObsqueueError):
    """The engine was used after close(); open a new one with open_engine()."""


class StaleClaimError(ObsqueueError):
    """The claim no longer holds: the lease expired and the message was re-delivered, or reset."""


#: Why a claim no longer holds, unless an engine knows better.
_STALE_WHY = "its lease expired and it was delivered again, or it was reset"


class _Delivered(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def claim(self) -> Any: ...


def stale_claim(msg: _Delivered, why: str = _STALE_WHY) -> StaleClaimError:
    """The one ``StaleClaimError`` every engine raises for a delivered message: which message,
    which claim, why the claim is gone, and what to do."""
    token = None if msg.claim is None else msg.claim.token
    return StaleClaimError(
        f"message {msg.id} is no longer held by claim {token}: {why}; do not acknowledge it"
    )


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for error messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
