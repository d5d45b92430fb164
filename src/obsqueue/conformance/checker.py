"""A history checker in the manner of Jepsen's total-queue checker: pure functions over a history.

``check_history(ops, final)`` takes the operations of :mod:`obsqueue.conformance.history` and the
rows still stored after the final drain (the backdoor oracle: ``{"message_id", "session", "key",
"status"}``) and returns a :class:`CheckResult`. Messages are identified by their ``key``.

Each message falls in exactly one class:

- ``ok``: its enqueue returned (not as a duplicate) and it was acknowledged (an ack returned ok,
  or an ack's outcome is unknown and the message is gone), or it is stored as dead;
- ``lost``: its enqueue returned, yet it is not stored, nothing acknowledged it and no clear can
  have removed it — never delivered, or delivered but gone without an acknowledgement;
- ``unexpected``: delivered or stored, but no enqueue of its key was invoked (or every enqueue of
  it returned ``duplicate=True``, i.e. promised to add nothing);
- ``recovered``: its enqueue failed or its outcome is unknown, yet it was delivered or is stored;
- ``unacked``: its enqueue returned, it is not acknowledged and still stored as pending or
  processing — the drain did not finish (informative);
- ``cleared``: its enqueue returned and it is gone, but a ``clear`` of its session may have
  removed it (informative).

An enqueue that returned ``duplicate=True`` names an existing message and is no message of its
own. On top of its class a message may be ``duplicated`` (delivered again after an ack of it
returned ok, or still stored after that) and ``redelivered`` (delivered more than once before its
first successful ack: allowed, informative).

A delivery is ``misdelivered`` when the consumer iterated another session than the message's:
the session its enqueue named, or the session the engine labelled it with.

Per session, over messages whose enqueue returned (not as a duplicate), A *precedes* B when A's
enqueue returned before B's was invoked. ``skip`` counts pairs where B was delivered while A was
outstanding (no ack or ``fail`` without retry of A invoked, with an outcome other than ``fail``; no
``clear`` that may have removed A; not dead), ``non_monotonic`` pairs where a delivery of A came
after a delivery of B. A lost A is counted once, as lost, not again as a skip of every later B.
``concurrent`` (P2) counts pairs of deliveries of one session whose holds
overlap by more than a tolerance: a delivery holds from its logged time until the first of its
lease's end (pushed by the same process's successful ``extend`` ops), the same process's next ack
or fail of it, and any ``reset`` of its session that had not returned when the delivery was logged
(a reset of unknown outcome ends every later hold: it may land at any time). A delivery without a
lease and without an ack or fail holds for no time (nothing is known of it).

Delivery times are logged when the iterator yields, which may be long after the claim (a consumer
SIGSTOPped in between). Ordering and duplicates therefore use an upper bound of the claim time:
the earliest of the logged time, the lease's end (a claim precedes its lease's end), and the logged
time of any delivery of the same message with a higher attempt (attempts grow with each claim).
A correct engine never produces an anomaly under these rules; the one blind spot is a consumer
stalled between claiming and logging across a ``reset`` (the suite resets after killing consumers).
"""

from __future__ import annotations

import argparse
import json
import sys
from bisect import bisect_right, insort
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from obsqueue.conformance.checker_model import (
    COUNTS,
    FAILING,
    INFORMATIVE,
    MAX_EXAMPLES,
    NEVER,
    Call,
    Delivery,
    Index,
    Message,
    Tally,
    index_history,
)
from obsqueue.conformance.history import Op, load_history, read_history_file

__all__ = [
    "COUNTS",
    "FAILING",
    "INFORMATIVE",
    "MAX_EXAMPLES",
    "CheckResult",
    "check_history",
    "main",
]


@dataclass(frozen=True)
class CheckResult:
    """What the checker found.

    ``counts`` has every key of :data:`COUNTS`; ``examples`` up to :data:`MAX_EXAMPLES`
    human-readable lines per count key; ``messages`` is how many distinct messages were classified
    (the sum of ok, lost, unexpected, recovered, unacked and cleared).
    """

    counts: dict[str, int]
    examples: dict[str, list[str]]
    messages: int

    def anomalies(self, allowed: frozenset[str] = frozenset()) -> dict[str, int]:
        """The failing anomalies seen, minus those ``allowed`` (e.g. by capabilities)."""
        return {k: self.counts[k] for k in FAILING if k not in allowed and self.counts[k] > 0}

    def valid(self, allowed: frozenset[str] = frozenset()) -> bool:
        return not self.anomalies(allowed)

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid(),
            "messages": self.messages,
            "counts": dict(self.counts),
            "anomalies": self.anomalies(),
            "examples": {k: list(v) for k, v in self.examples.items() if v},
        }


def check_history(
    ops: Iterable[Op], final: Sequence[dict[str, Any]], *, tolerance_ms: float = 20.0
) -> CheckResult:
    """Classify every message and find order (P1) and exclusivity (P2) anomalies."""
    history = sorted(ops, key=Op.sort_key)
    index = index_history(history, final)
    tally = Tally(history[0].time_ns if history else 0)
    classified = sum(_classify(m, index, tally) for m in index.messages.values())
    _check_sessions(index, tally)
    _check_order(index, tally)
    _check_exclusive(index, int(tolerance_ms * 1_000_000), tally)
    return CheckResult(tally.counts, tally.examples, classified)


# -- classification --------------------------------------------------------------------------


def _classify(m: Message, index: Index, tally: Tally) -> bool:
    """Count ``m`` in its class and its flags; False if it is no message (never seen)."""
    kind = _kind(m, index)
    if kind is None:
        return False
    if kind != "ok":
        tally.add(kind, lambda: _describe(kind, m, tally))
    else:
        tally.counts["ok"] += 1
    _flag_repeats(m, tally)
    return True


def _kind(m: Message, index: Index) -> str | None:
    seen = bool(m.deliveries or m.stored)
    enq = m.enqueued
    if enq is None:
        if not seen:
            return None
        return "recovered" if any(c.outcome != "ok" for c in m.enqueues) else "unexpected"
    statuses = m.statuses
    if "dead" in statuses or any(c.outcome == "ok" for c in m.acks):
        return "ok"
    if statuses:
        return "unacked"
    if any(c.outcome == "info" for c in m.acks):
        return "ok"
    if any(c.covers(m.session) and c.outcome != "fail" and c.end > enq.start for c in index.clears):
        return "cleared"
    return "lost"


def _describe(kind: str, m: Message, tally: Tally) -> str:
    where = f"{m.key} (session {m.session})"
    seen = f"delivered {len(m.deliveries)}x, stored as {m.statuses or 'nothing'}"
    if kind == "lost":
        enq = m.enqueued
        assert enq is not None
        fate = (
            "never delivered"
            if not m.deliveries
            else f"delivered {len(m.deliveries)}x, never acknowledged"
        )
        return f"{where}: enqueue returned at {tally.at(enq.end)}; {fate}; not stored"
    if kind == "unexpected":
        why = "its enqueue returned duplicate=True" if m.enqueues else "no enqueue of it"
        return f"{where}: {seen}, but {why}"
    if kind == "recovered":
        outcomes = sorted({c.outcome for c in m.enqueues})
        return f"{where}: enqueue outcome {'/'.join(outcomes)}, yet {seen}"
    if kind == "unacked":
        return f"{where}: {seen} after the drain"
    return f"{where}: gone; a clear of its session may have removed it"


def _flag_repeats(m: Message, tally: Tally) -> None:
    acked_at = m.first_ack_ok
    again = [d for d in m.deliveries if d.claim_bound_ns > acked_at]
    if again or (acked_at < NEVER and m.stored):
        what = (
            f"delivered again at {tally.at(again[0].time_ns)} (attempt {again[0].attempt}, "
            f"{again[0].process})"
            if again
            else f"still stored as {m.statuses}"
        )
        tally.add(
            "duplicated",
            lambda: f"{m.key} (session {m.session}): ack returned at {tally.at(acked_at)}, {what}",
        )
    before = [d for d in m.deliveries if d.claim_bound_ns < acked_at]
    if len(before) > 1:
        tally.add(
            "redelivered",
            lambda: (
                f"{m.key}: delivered {len(before)}x before an ack: "
                + ", ".join(
                    f"attempt {d.attempt} to {d.process} at {tally.at(d.time_ns)}" for d in before
                )
            ),
        )


# -- delivery to the wrong session ------------------------------------------------------------


def _check_sessions(index: Index, tally: Tally) -> None:
    """A delivery to a consumer iterating another session than the message's (as enqueued, or
    as the engine labels it) is ``misdelivered``."""
    for m in index.messages.values():
        enqueued = m.session if m.enqueues else None
        for d in m.deliveries:
            wrong = {enqueued, d.message_session} - {None, d.session}
            if wrong:
                tally.add(
                    "misdelivered",
                    partial(
                        lambda d, w: (
                            f"{d.key}: of session {w}, delivered to {d.process} iterating "
                            f"session {d.session} at {tally.at(d.time_ns)}"
                        ),
                        d,
                        "/".join(sorted(str(x) for x in wrong)),
                    ),
                )


# -- P1: per-session order -------------------------------------------------------------------


def _check_order(index: Index, tally: Tally) -> None:
    sessions: dict[str, list[Message]] = defaultdict(list)
    for m in index.messages.values():
        if m.enqueued is not None:
            sessions[m.session].append(m)
    for messages in sessions.values():
        later = [m for m in messages if m.deliveries]
        kept = [m for m in messages if _kind(m, index) != "lost"]
        _count_pairs(
            "skip",
            kept,
            lambda a: _removal(a, index),
            later,
            tally,
            lambda a, b: (
                f"session {b.session}: {b.key} delivered at "
                f"{tally.at(b.first_claim_bound)} while {a.key}, enqueued "
                f"before it, was outstanding until "
                f"{tally.at(_removal(a, index))}"
            ),
        )
        _count_pairs(
            "non_monotonic",
            later,
            lambda a: a.last_claim_bound,
            later,
            tally,
            lambda a, b: (
                f"session {b.session}: {a.key} delivered at "
                f"{tally.at(a.last_claim_bound)} after {b.key} at "
                f"{tally.at(b.first_claim_bound)}, though enqueued before it"
            ),
        )


def _removal(m: Message, index: Index) -> int:
    """The earliest time ``m`` may have stopped being outstanding (never: still outstanding)."""
    enq = m.enqueued
    assert enq is not None
    times = [c.start for c in m.acks if c.outcome != "fail"]
    times += [c.start for c in m.fails if c.outcome != "fail" and not c.invoke.value.get("retry")]
    times += [
        c.start
        for c in index.clears
        if c.covers(m.session) and c.outcome != "fail" and c.end > enq.start
    ]
    if "dead" in m.statuses:
        times.append(m.last_claim_bound)
    return min(times, default=NEVER)


def _count_pairs(
    kind: str,
    earlier: list[Message],
    value: Callable[[Message], int],
    later: list[Message],
    tally: Tally,
    describe: Callable[[Message, Message], str],
) -> None:
    """Count pairs (A, B), A preceding B, with ``value(A)`` after B's first delivery."""
    firsts = sorted(earlier, key=lambda a: _enqueued(a).end)
    values: list[int] = []
    added: list[Message] = []
    for b in sorted(later, key=lambda b: _enqueued(b).start):
        while len(added) < len(firsts) and _enqueued(firsts[len(added)]).end < _enqueued(b).start:
            insort(values, value(firsts[len(added)]))
            added.append(firsts[len(added)])
        threshold = b.first_claim_bound
        n = len(values) - bisect_right(values, threshold)
        if n == 0:
            continue
        tally.counts[kind] += n
        for a in added:
            if not tally.wants_example(kind):
                break
            if value(a) > threshold:
                tally.examples[kind].append(describe(a, b))


def _enqueued(m: Message) -> Call:
    enq = m.enqueued
    assert enq is not None
    return enq


# -- P2: one consumer per session ------------------------------------------------------------


def _check_exclusive(index: Index, tolerance_ns: int, tally: Tally) -> None:
    sessions: dict[str, list[tuple[int, int, Delivery]]] = defaultdict(list)
    for m in index.messages.values():
        for d in m.deliveries:
            end = _hold_end(d, m, index)
            if end - d.time_ns > tolerance_ns:
                sessions[d.session].append((d.time_ns, end, d))
    for holds in sessions.values():
        active: list[tuple[int, int, Delivery]] = []
        for hold in sorted(holds, key=lambda h: (h[0], h[1])):
            active = [h for h in active if h[1] - hold[0] > tolerance_ns]
            for other in active:
                tally.add("concurrent", partial(_overlap, other, hold, tally))
            active.append(hold)


def _overlap(a: tuple[int, int, Delivery], b: tuple[int, int, Delivery], tally: Tally) -> str:
    (a_start, a_end, da), (b_start, b_end, db) = a, b
    overlap_ms = (min(a_end, b_end) - max(a_start, b_start)) / 1e6
    return (
        f"session {db.session}: {da.key} held by {da.process} from {tally.at(a_start)} to "
        f"{tally.at(a_end)} and {db.key} held by {db.process} from {tally.at(b_start)} to "
        f"{tally.at(b_end)} overlap by {overlap_ms:.1f} ms"
    )


def _hold_end(d: Delivery, m: Message, index: Index) -> int:
    """When delivery ``d``'s hold surely ended (see the module docstring)."""
    own = [c for c in (*m.acks, *m.fails) if c.invoke.process == d.process and c.start >= d.time_ns]
    if d.lease_end_ns is None:
        lease_end = min((c.start for c in own), default=d.time_ns)
    else:
        lease_end = max([d.lease_end_ns, *_extended(d, m)])
    resets = [
        max(c.start, d.time_ns)
        for c in index.resets
        if c.covers(d.session) and c.outcome != "fail" and c.end > d.time_ns
    ]
    return min([lease_end, *(c.start for c in own), *resets])


def _extended(d: Delivery, m: Message) -> list[int]:
    ends = []
    for c in m.extends:
        lease = c.result.get("lease_expires_at_ms")
        if (
            c.invoke.process == d.process
            and c.outcome == "ok"
            and c.start >= d.time_ns
            and c.invoke.value.get("token") == d.token
            and isinstance(lease, int)
        ):
            ends.append(lease * 1_000_000)
    return ends


# -- offline re-check ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m obsqueue.conformance.checker HISTORY [--final ROWS.json] [--allow A,B]``.

    HISTORY is a history directory or a file written by ``save_history``; ROWS.json is the list
    of rows stored after the drain. Prints the result as JSON; exit status 1 if invalid.
    """
    parser = argparse.ArgumentParser(prog="python -m obsqueue.conformance.checker")
    parser.add_argument("history", type=Path)
    parser.add_argument("--final", type=Path, help="JSON list of the rows stored at the end")
    parser.add_argument("--allow", default="", help="comma-separated anomalies to allow")
    args = parser.parse_args(argv)
    path: Path = args.history
    ops = load_history(path) if path.is_dir() else read_history_file(path)
    final = json.loads(args.final.read_text()) if args.final else []
    result = check_history(ops, final)
    allowed = frozenset(a for a in args.allow.split(",") if a)
    sys.stdout.write(
        json.dumps({**result.to_json(), "valid": result.valid(allowed)}, indent=2) + "\n"
    )
    return 0 if result.valid(allowed) else 1


if __name__ == "__main__":
    sys.exit(main())
