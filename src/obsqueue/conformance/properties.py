"""The properties P1-P16 (docs/properties.md) and the capability each needs."""

from __future__ import annotations

from dataclasses import dataclass

from obsqueue.engines.base import Capability

__all__ = ["PROPERTIES", "Property", "property_by_id"]


@dataclass(frozen=True, slots=True)
class Property:
    id: str
    title: str
    must_hold: str
    capability: Capability


PROPERTIES: tuple[Property, ...] = (
    Property(
        "P1",
        "per-session FIFO",
        "deliveries of one session come in enqueue order; a "
        "redelivered message comes before every later message of its session",
        Capability.FIFO,
    ),
    Property(
        "P2",
        "one consumer per session",
        "at most one message of a session is in flight "
        "at any instant; other sessions are not held up",
        Capability.EXCLUSIVE_SESSION,
    ),
    Property(
        "P3",
        "dedupe",
        "a second enqueue of the same (content_session_id, tool_use_id) "
        "while queued returns duplicate=True and the first id",
        Capability.DEDUPE,
    ),
    Property(
        "P4",
        "durable enqueue",
        "once enqueue returns, the message survives SIGKILL of "
        "clients and kill -9 + restart of the server",
        Capability.DURABLE_ENQUEUE,
    ),
    Property(
        "P5",
        "durable processing",
        "once mark_processed returns, the message is never delivered again, across restarts",
        Capability.DURABLE_PROCESSING,
    ),
    Property(
        "P6",
        "startup recovery",
        "reset_processing_to_pending returns in-flight messages to pending at their place",
        Capability.STARTUP_RECOVERY,
    ),
    Property(
        "P7",
        "stall recovery",
        "a claim whose consumer died or froze becomes deliverable "
        "after its lease, with attempt + 1",
        Capability.STALL_RECOVERY,
    ),
    Property(
        "P8",
        "fencing",
        "acknowledging under an expired, re-delivered claim raises "
        "StaleClaimError and changes nothing",
        Capability.FENCING,
    ),
    Property(
        "P9",
        "wakeup",
        "a blocked consumer gets a new message fast (p99 < 1 s)",
        Capability.FAST_WAKEUP,
    ),
    Property(
        "P10", "fidelity", "payload and original_timestamp round-trip exactly", Capability.FIDELITY
    ),
    Property(
        "P11",
        "depth",
        "pending counts and total depth match the truth, never negative",
        Capability.DEPTH,
    ),
    Property(
        "P12",
        "clear",
        "clear_pending_for_session removes exactly that session's pending messages",
        Capability.CLEAR,
    ),
    Property(
        "P13",
        "stop and idle",
        "the iterator ends within 1 s of stop; on_idle_timeout is called after idle_timeout",
        Capability.STOP_AND_IDLE,
    ),
    Property(
        "P14",
        "bad input",
        "invalid arguments raise InvalidMessageError naming the field "
        "and write nothing; an unreachable server raises EngineUnavailableError",
        Capability.INPUT_VALIDATION,
    ),
    Property(
        "P15",
        "bounded retries",
        "mark_failed(retry=True) re-queues with attempt + 1 up to "
        "max_attempts, then the message is dead",
        Capability.BOUNDED_RETRIES,
    ),
    Property(
        "P16",
        "close",
        "close() is idempotent; any use after it raises EngineClosedError",
        Capability.CLOSE,
    ),
)

_BY_ID = {p.id: p for p in PROPERTIES}


def property_by_id(property_id: str) -> Property:
    try:
        return _BY_ID[property_id]
    except KeyError:
        raise KeyError(f"unknown property {property_id!r}; known: {', '.join(_BY_ID)}") from None
