"""The task functions the peer libraries' workers import by dotted path (RQ jobs, Dramatiq
actors, Huey and procrastinate tasks name one of these, as their users' code names its own).

The work itself is nothing: the harness measures the queue, and calls its ``on_message`` after
each library has acknowledged the task in its own way (see each peer's module)."""

from __future__ import annotations

__all__ = ["record"]


def record(session_id: str, payload: str) -> None:
    """One message of ``session_id``: nothing to do; returning None stores no result."""
    del session_id, payload
