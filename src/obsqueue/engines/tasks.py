"""Task functions that library workers (RQ, Dramatiq, Huey) import by dotted path.

Adapters store observations as the library's own jobs/messages/tasks naming one of these
functions, exactly as the library's users do. obsqueue's consumers pull those jobs through the
engine contract instead of running a library worker, so the functions only need to be importable.
"""

from __future__ import annotations

from typing import Any

__all__ = ["record_observation"]


def record_observation(envelope: dict[str, Any]) -> dict[str, Any]:
    """What a library worker would run for one observation: here, hand the envelope back."""
    return envelope
