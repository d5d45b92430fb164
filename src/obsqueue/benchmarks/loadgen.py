"""What each producer sends, and when: the open-loop schedule and the stamped payloads.

Sessions are split between producers (session ``i`` belongs to producer ``i % producers``), so a
session's messages come from one process in order. A producer sends bursts of
``burst_min``…``burst_max`` messages of one session, sessions picked with a fixed-seed RNG. In
``rate`` mode each burst has an *intended* send time on a fixed schedule (total rate split
evenly between producers); latency is measured from that time, not from when the send actually
happened, so a stalled producer cannot hide the wait (no coordinated omission). The delay from
the intended time to the actual send is recorded apart (``send_delay``).

Payloads are JSON text that starts with the stamps: ``{"t":<intended ns>,"w":<warm-up 0|1>,"p":
"…"}``, padded to the size drawn for the message. Times are ``time.monotonic_ns()`` (one clock
for every process on the machine).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from obsqueue.benchmarks.workload import Arrival, Payload, Workload

__all__ = ["ProducerPlan", "Send", "parse_stamp", "plan_producers", "session_ids", "stamp"]

_HEAD = '{"t":'


@dataclass(frozen=True)
class Send:
    session_id: str
    size: int
    warm: bool
    offset_ns: int | None  # intended time after the start (rate mode), None: send at once


@dataclass(frozen=True)
class ProducerPlan:
    index: int
    sends: tuple[Send, ...]
    pause_ms: float = 0.0
    unique_keys: bool = False

    @property
    def measured(self) -> int:
        return sum(not s.warm for s in self.sends)


def session_ids(count: int) -> list[str]:
    return [f"s{i:05d}" for i in range(count)]


def stamp(intended_ns: int, warm: bool, size: int) -> str:
    """The payload text for one message: stamps, then padding up to ``size`` bytes."""
    head = f'{_HEAD}{intended_ns},"w":{int(warm)},"p":"'
    return head + "x" * max(0, size - len(head) - 2) + '"}'


def parse_stamp(payload: str) -> tuple[int, bool]:
    """``(intended_ns, warm)`` from a stamped payload."""
    if not payload.startswith(_HEAD):
        raise ValueError(f"not a harness payload: {payload[:40]!r}")
    comma = payload.index(",", len(_HEAD))
    return int(payload[len(_HEAD) : comma]), payload[comma + 5] == "1"


def draw_size(payload: Payload, rng: random.Random) -> int:
    if payload.distribution == "fixed" or payload.min_bytes == payload.max_bytes:
        return payload.max_bytes
    if payload.distribution == "uniform":
        return rng.randint(payload.min_bytes, payload.max_bytes)
    low, high = math.log(max(payload.min_bytes, 1)), math.log(payload.max_bytes)
    return round(math.exp(rng.uniform(low, high)))


def plan_producers(workload: Workload, *, rate_per_s: float | None = None) -> list[ProducerPlan]:
    """Every producer's sends. ``rate_per_s`` (open loop) sets the schedule and the message
    count (rate x duration); otherwise each session gets ``messages_per_session`` at once."""
    sessions = session_ids(workload.sessions)
    producers = min(workload.producers, len(sessions))
    plans = []
    for index in range(producers):
        rng = random.Random(workload.payload.seed * 1_000_003 + index)
        mine = sessions[index::producers]
        if rate_per_s is None:
            counts = dict.fromkeys(mine, workload.messages_per_session)
        else:
            total = max(1, round(rate_per_s * workload.arrival.duration_s / producers))
            counts = {
                sid: total // len(mine) + (i < total % len(mine)) for i, sid in enumerate(mine)
            }
        order = _bursts(counts, workload.arrival, rng)
        warm = workload.warmup_messages // producers
        rate = None if rate_per_s is None else rate_per_s / producers
        sends = _sends(order, workload.payload, rng, warm, rate, workload.arrival)
        unique = workload.tool_use_ids == "unique"
        plans.append(ProducerPlan(index, tuple(sends), workload.arrival.pause_ms, unique))
    return plans


def _bursts(counts: dict[str, int], arrival: Arrival, rng: random.Random) -> list[list[str]]:
    left = {sid: n for sid, n in counts.items() if n > 0}
    bursts = []
    while left:
        sid = rng.choice(sorted(left))
        size = min(left[sid], rng.randint(arrival.burst_min, arrival.burst_max))
        bursts.append([sid] * size)
        left[sid] -= size
        if left[sid] == 0:
            del left[sid]
    return bursts


def _sends(
    bursts: list[list[str]],
    payload: Payload,
    rng: random.Random,
    warm: int,
    rate_per_s: float | None,
    arrival: Arrival,
) -> list[Send]:
    sends: list[Send] = []
    for burst in bursts:
        offset = None if rate_per_s is None else round(len(sends) / rate_per_s * 1e9)
        for sid in burst:
            sends.append(Send(sid, draw_size(payload, rng), len(sends) < warm, offset))
    return sends
