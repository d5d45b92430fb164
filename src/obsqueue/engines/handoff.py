"""Hand-off: the next head, claimed in the same round trip as the acknowledgement before it.

An engine that can acknowledge a message and claim its session's next head in one statement,
transaction or script (``ack_and_claim``) keeps one :class:`Handoff`. Its claim hook
(``ObservationQueueEngine._claimer``) is :meth:`Handoff.claimer`, and its ``_mark_processed`` is
:meth:`Handoff.ack`: when the acknowledged message was delivered by a live iterator that wants
another, the head claimed with the ack is put in that iterator's slot and yielded next without
another round trip — one round trip and one commit per message. A head claimed that way but
never handed out (the iterator was stopped or closed first) is given back (``unclaim``) with its
attempt count restored; if the process dies in between, it comes back after its lease like any
stalled claim.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from obsqueue.engines.types import PendingMessageWithId

__all__ = ["AckAndClaim", "Handoff"]

#: Acknowledge ``msg`` and claim its session's next head for ``consumer_id`` with ``lease_s``,
#: in one round trip; raise ``StaleClaimError`` (claiming nothing) if the claim is gone.
AckAndClaim = Callable[[PendingMessageWithId, str, float], PendingMessageWithId | None]


@dataclass(eq=False)
class _Slot:
    """One running iterator: its session, its consumer, the head prefetched for it."""

    session_id: str
    consumer_id: str
    lease_s: float
    stop: threading.Event | None
    held: PendingMessageWithId | None = None
    current: tuple[int, int] | None = None
    closed: bool = False

    def wants_more(self) -> bool:
        stopped = self.stop is not None and self.stop.is_set()
        return not self.closed and not stopped and self.held is None


def _key(msg: PendingMessageWithId) -> tuple[int, int]:
    assert msg.claim is not None
    return msg.id, int(msg.claim.token)


class Handoff:
    """The slots of one engine's running iterators (thread-safe)."""

    def __init__(
        self,
        *,
        ack_and_claim: AckAndClaim,
        unclaim: Callable[[PendingMessageWithId], None],
        wake: Callable[[str], None],
    ) -> None:
        self._ack_and_claim = ack_and_claim
        self._unclaim = unclaim
        self._wake = wake
        self._lock = threading.Lock()
        self._slots: dict[tuple[int, int], _Slot] = {}
        self._live: set[_Slot] = set()

    @contextlib.contextmanager
    def claimer(
        self,
        sid: str,
        consumer_id: str,
        lease_s: float,
        stop: threading.Event | None,
        claim_next: Callable[[], PendingMessageWithId | None],
    ) -> Iterator[Callable[[], PendingMessageWithId | None]]:
        """The iterator's claims: the head handed to its slot first, else ``claim_next``."""
        slot = _Slot(sid, consumer_id, lease_s, stop)
        with self._lock:
            self._live.add(slot)

        def claim() -> PendingMessageWithId | None:
            msg = self._take(slot) or claim_next()
            if msg is not None:
                self._track(slot, msg)
            return msg

        try:
            yield claim
        finally:
            self._retire(slot)

    def ack(
        self, msg: PendingMessageWithId, ack_alone: Callable[[PendingMessageWithId], None]
    ) -> bool:
        """Acknowledge ``msg``: with the next head claimed in the same round trip when a live
        iterator delivered it and wants more, else with ``ack_alone``. True when the next head
        was claimed and handed to that iterator."""
        slot = self.forget(msg)
        if slot is None or not slot.wants_more():
            ack_alone(msg)
            return False
        nxt = self._ack_and_claim(msg, slot.consumer_id, slot.lease_s)
        if nxt is None:
            return False
        self._hand_to(slot, nxt)
        return True

    def forget(self, msg: PendingMessageWithId) -> _Slot | None:
        """The live iterator that delivered ``msg``, forgotten (it is being acked or failed)."""
        with self._lock:
            return self._slots.pop(_key(msg), None)

    def close(self) -> None:
        """End every slot and give back the heads they held (the engine is closing)."""
        with self._lock:
            held = [s.held for s in self._live if s.held is not None]
            for slot in self._live:
                slot.closed, slot.held = True, None
        for msg in held:
            self._unclaim(msg)

    def _track(self, slot: _Slot, msg: PendingMessageWithId) -> None:
        key = _key(msg)
        with self._lock:
            if slot.current is not None:
                self._slots.pop(slot.current, None)
            slot.current = key
            self._slots[key] = slot

    def _take(self, slot: _Slot) -> PendingMessageWithId | None:
        with self._lock:
            held, slot.held = slot.held, None
            return held

    def _hand_to(self, slot: _Slot, msg: PendingMessageWithId) -> None:
        with self._lock:
            taken = not slot.closed
            if taken:
                slot.held = msg
        if taken:
            self._wake(slot.session_id)
        else:
            self._unclaim(msg)  # the iterator ended meanwhile

    def _retire(self, slot: _Slot) -> None:
        with self._lock:
            slot.closed = True
            self._live.discard(slot)
            if slot.current is not None:
                self._slots.pop(slot.current, None)
            held, slot.held = slot.held, None
        if held is not None:
            self._unclaim(held)
