"""The backdoor oracle for ``bullmq+redis://``: BullMQ's keys read straight from Redis.

It bypasses BullMQ's client and the engine: a synchronous redis-py client reads the session
registry (obsqueue's glue), then each session queue's lists and sorted sets, then the job hashes
and their lock keys, each step in one MULTI. The layout it reads is BullMQ's own (the same Lua
scripts run in Node and Python): ``<prefix>:<queue>:wait|paused|active`` (lists),
``:delayed|prioritized|failed`` (sorted sets), ``:<job id>`` (hash: ``name``, ``data``,
``timestamp``, ``ats`` attempts started, ``failedReason``) and ``:<job id>:lock`` (the token of
the claim, expiring with the lease; its end is read with ``PEXPIRETIME``, so Redis >= 7.0).
"""

from __future__ import annotations

import json
from typing import Any, TypeGuard, cast

import redis

from obsqueue.engines.base import MessageStatus, RawMessage

__all__ = [
    "JOB_ID_PREFIX",
    "envelope_fields",
    "is_envelope",
    "job_id",
    "message_id",
    "read_stored",
]

#: BullMQ (Node) refuses custom job ids that are integers, so ids are ``m<message id>``.
JOB_ID_PREFIX = "m"

#: Where each BullMQ state lives, and what the contract calls it.
_LISTS: dict[str, MessageStatus] = {"wait": "pending", "paused": "pending", "active": "processing"}
_ZSETS: dict[str, MessageStatus] = {
    "delayed": "pending",
    "prioritized": "pending",
    "failed": "dead",
}


def envelope_fields(envelope: dict[str, Any]) -> dict[str, Any]:
    """The message fields a job's data (``tasks.observation_envelope``) carries, by name."""
    return {name: envelope[name] for name in _ENVELOPE_FIELDS}


def is_envelope(data: object) -> TypeGuard[dict[str, Any]]:
    """True when a job's data is an envelope obsqueue wrote."""
    return isinstance(data, dict) and all(name in data for name in _ENVELOPE_FIELDS)


_ENVELOPE_FIELDS = ("content_session_id", "kind", "tool_use_id", "payload", "original_timestamp")


def job_id(message: int) -> str:
    return f"{JOB_ID_PREFIX}{message}"


def message_id(job: str) -> int | None:
    """The message id of a BullMQ job id obsqueue wrote, or None for any other job."""
    digits = job[len(JOB_ID_PREFIX) :]
    return int(digits) if job.startswith(JOB_ID_PREFIX) and digits.isdigit() else None


def read_stored(client: redis.Redis[Any], sessions: list[tuple[str, str]]) -> list[RawMessage]:
    """Every message obsqueue stored in the ``(session id, queue key prefix)`` queues, by id
    (a queue key prefix is ``<prefix>:<queue>:``)."""
    located = _locate(client, sessions)
    pipe = client.pipeline(transaction=True)
    for base, job, _session, _status in located:
        pipe.hgetall(base + job)
        pipe.get(f"{base}{job}:lock")
        cast(Any, pipe).execute_command("PEXPIRETIME", f"{base}{job}:lock")  # Redis >= 7.0
    replies = pipe.execute()
    rows = []
    for i, (_base, job, session, status) in enumerate(located):
        fields, lock, expires_at = replies[3 * i : 3 * i + 3]
        number = message_id(job)
        envelope = json.loads(fields["data"]) if fields else None
        if number is not None and is_envelope(envelope):
            lease = int(expires_at) if int(expires_at) > 0 else None
            rows.append(_raw(number, session, status, fields, envelope, lock, lease))
    return sorted(rows, key=lambda r: r.id)


def _locate(
    client: redis.Redis[Any], sessions: list[tuple[str, str]]
) -> list[tuple[str, str, str, MessageStatus]]:
    """(queue key prefix, job id, session, status) of every job in the sessions' queues."""
    pipe = client.pipeline(transaction=True)
    for _session, base in sessions:
        for name in _LISTS:
            pipe.lrange(base + name, 0, -1)
        for name in _ZSETS:
            pipe.zrange(base + name, 0, -1)
    replies = iter(pipe.execute())
    found: list[tuple[str, str, str, MessageStatus]] = []
    for session, base in sessions:
        for status in [*_LISTS.values(), *_ZSETS.values()]:
            found.extend((base, job, session, status) for job in next(replies))
    return found


def _raw(
    number: int,
    session: str,
    status: MessageStatus,
    fields: dict[str, str],
    envelope: dict[str, Any],
    lock: str | None,
    lease_ms: int | None,
) -> RawMessage:
    held = status == "processing" and lock is not None and lock.isdigit()
    return RawMessage(
        id=number,
        session_id=session,
        **envelope_fields(envelope),
        status=status,
        attempt=int(fields.get("ats") or 0),
        claim_token=int(lock) if held and lock is not None else None,
        lease_expires_at_ms=lease_ms if held else None,
        last_error=fields.get("failedReason"),
    )
