"""Rows of the ``sqlite://`` engine to and from Python: statement parameters, results as
the contract's records."""

from __future__ import annotations

import sqlite3
from typing import Any

from obsqueue.engines.records import delivered, stored
from obsqueue.engines.tasks import observation_envelope
from obsqueue.engines.types import PendingMessage, PendingMessageWithId, RawMessage

__all__ = ["first", "insert_params", "to_delivered", "to_raw"]


def insert_params(
    session_id: str, content_session_id: str, message: PendingMessage, payload: str, now: int
) -> dict[str, Any]:
    """The parameters of the ``insert`` statement (``payload``: the JSON text to store)."""
    envelope = observation_envelope(session_id, content_session_id, message)
    return {**envelope, "payload": payload, "enqueued_at_ms": now}


def first(rows: list[Any]) -> Any:
    return rows[0] if rows else None


def to_raw(row: sqlite3.Row) -> RawMessage:
    """A row of the ``inspect`` statement as the oracle's record."""
    return stored(*_fields(row), row["status"], row["attempt"], _claim(row), row["last_error"])


def to_delivered(row: sqlite3.Row) -> PendingMessageWithId:
    """A row a ``claim`` statement returned, as the message handed to the consumer."""
    claim = (*_claim(row), row["consumer_id"])
    return delivered(*_fields(row), row["attempt"], claim, row["enqueued_at_ms"])


def _fields(row: sqlite3.Row) -> tuple[Any, str, str, Any, str | None, Any, Any]:
    """What ``delivered`` and ``stored`` take first: id, session, message, as stored."""
    return (
        row["id"],
        row["session_id"],
        row["content_session_id"],
        row["kind"],
        row["tool_use_id"],
        row["payload"],
        row["original_timestamp"],
    )


def _claim(row: sqlite3.Row) -> tuple[Any, Any]:
    return row["claim_token"], row["lease_expires_at_ms"]
