"""Engine options: every default and every validator, in one place.

The options every engine takes are the fields of :class:`EngineOptions`; the defaults of the
options particular engines add are the constants below. Every option is keyword-only and says
its unit in its name (``lease_s``, ``busy_timeout_s``, ``poll_interval_s``). Each engine checks
its own options with the validators here, so one rule holds everywhere: a number of seconds is
an ``int`` or ``float`` (never a ``bool``), finite, and in range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, TypedDict

from obsqueue.errors import InvalidMessageError

__all__ = [
    "BUSY_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "POOL_MAX_SIZE",
    "POOL_MIN_SIZE",
    "SOCKET_TIMEOUT_S",
    "CommonOptions",
    "EngineOptions",
    "non_negative_seconds",
    "positive_int",
    "positive_seconds",
    "to_ms",
]

#: Defaults of the options some engines add (each engine's docstring says which it takes).
SOCKET_TIMEOUT_S: Final = 10.0  # Redis family: how long one reply may take
MAX_CONNECTIONS: Final = 512  # Redis family: the pool's bound
BUSY_TIMEOUT_S: Final = 10.0  # SQLite family: how long a statement waits for the write lock
POOL_MIN_SIZE: Final = 1  # PostgreSQL pool
POOL_MAX_SIZE: Final = 10


class CommonOptions(TypedDict, total=False):
    """The keyword options every engine takes (see :class:`EngineOptions` for the defaults)."""

    lease_s: float
    max_attempts: int
    namespace: str
    retry_backoff_s: float
    retry_backoff_max_s: float
    connect_timeout_s: float


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The options every engine takes, keyword-only, with units in their names."""

    lease_s: float = 30.0
    max_attempts: int = 5
    namespace: str = "obsq"
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        positive_seconds("lease_s", self.lease_s)
        positive_seconds("connect_timeout_s", self.connect_timeout_s)
        non_negative_seconds("retry_backoff_s", self.retry_backoff_s)
        non_negative_seconds("retry_backoff_max_s", self.retry_backoff_max_s)
        positive_int("max_attempts", self.max_attempts)
        ns = self.namespace
        if not isinstance(ns, str) or not ns.isidentifier() or not ns.isascii() or len(ns) > 40:
            raise InvalidMessageError(
                "namespace", f"must be an ASCII identifier of at most 40 characters, got {ns!r}"
            )


def _real(value: object) -> float | None:
    """``value`` as a finite float, or None for a bool, a non-number, NaN or infinity."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def positive_seconds(name: str, value: object, *, at_most: float | None = None) -> float:
    """A positive, finite number of seconds (at most ``at_most``), as a float."""
    seconds = _real(value)
    if seconds is None or seconds <= 0 or (at_most is not None and seconds > at_most):
        bound = "" if at_most is None else f" of at most {at_most:g}"
        raise InvalidMessageError(
            name, f"must be a positive number of seconds{bound}, got {value!r}"
        )
    return seconds


def non_negative_seconds(name: str, value: object) -> float:
    """A finite number of seconds >= 0, as a float."""
    seconds = _real(value)
    if seconds is None or seconds < 0:
        raise InvalidMessageError(name, f"must be a number of seconds >= 0, got {value!r}")
    return seconds


def positive_int(name: str, value: object) -> int:
    """An ``int`` (never a ``bool``) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessageError(name, f"must be an int of at least 1, got {value!r}")
    if value < 1:
        raise InvalidMessageError(name, f"must be at least 1, got {value}")
    return value


def to_ms(seconds: float) -> int:
    """Seconds as whole milliseconds for a backend argument, at least 1."""
    return max(1, round(seconds * 1000))
