"""The contract's shared parts: option validators, the stale-claim error, the dedupe key, the retry
deadline, and the claim hook (memory engine, no sockets)."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from obsqueue import EngineClosedError, PendingMessage, StaleClaimError
from obsqueue.engines import base, types
from obsqueue.engines.base import Claimer, PendingMessageWithId
from obsqueue.engines.memory import MemoryEngine
from obsqueue.engines.options import non_negative_seconds, positive_int, positive_seconds, to_ms
from obsqueue.engines.records import dedupe_field
from obsqueue.engines.retry import Deadline
from obsqueue.errors import InvalidMessageError, stale_claim


@pytest.mark.parametrize("value", [0, -1, True, False, math.nan, math.inf, "5", None])
def test_positive_seconds_refuses_what_is_not_a_positive_finite_number(value: object) -> None:
    with pytest.raises(InvalidMessageError, match="socket_timeout_s"):
        positive_seconds("socket_timeout_s", value)


def test_positive_seconds_takes_ints_and_floats_and_honours_a_bound() -> None:
    assert positive_seconds("x", 2) == 2.0
    assert positive_seconds("x", 0.2, at_most=0.2) == 0.2
    with pytest.raises(InvalidMessageError, match=r"at most 0\.2"):
        positive_seconds("x", 0.25, at_most=0.2)


def test_non_negative_seconds_and_positive_int() -> None:
    assert non_negative_seconds("x", 0) == 0.0
    for bad in (-0.1, math.inf, True):
        with pytest.raises(InvalidMessageError):
            non_negative_seconds("x", bad)
    assert positive_int("n", 3) == 3
    for bad_int in (0, True, 1.0):
        with pytest.raises(InvalidMessageError, match="n"):
            positive_int("n", bad_int)


def test_to_ms_rounds_and_is_at_least_one() -> None:
    assert to_ms(0.0001) == 1
    assert to_ms(1.2345) == 1234


def test_every_engine_option_rejects_bool_and_infinity() -> None:
    for options in ({"lease_s": True}, {"connect_timeout_s": math.inf}):
        with pytest.raises(InvalidMessageError):
            MemoryEngine(**options)  # type: ignore[arg-type]


def test_stale_claim_names_message_and_claim_and_says_what_to_do() -> None:
    engine = MemoryEngine()
    engine.enqueue("s", "c", PendingMessage("observation"))
    msg = engine.claim_next("s", lease_s=0.05)
    assert msg is not None and msg.claim is not None
    time.sleep(0.1)
    assert engine.claim_next("s") is not None  # re-delivered: the first claim is stale
    with pytest.raises(StaleClaimError) as info:
        engine.mark_processed(msg)
    assert str(info.value) == str(stale_claim(msg))
    assert f"message {msg.id}" in str(info.value)
    assert f"claim {msg.claim.token}" in str(info.value)
    assert "do not acknowledge it" in str(info.value)


def test_dedupe_field_is_length_prefixed_so_pairs_never_collide() -> None:
    assert dedupe_field("ab", "c") == "2:abc"
    assert dedupe_field("a", "bc") != dedupe_field("ab", "c")


def test_deadline_retries_only_safe_calls_and_stops_at_its_end() -> None:
    deadline = Deadline(0.1, check_open=lambda: None)
    assert not deadline.again(safe=False)
    started = time.monotonic()
    tries = 0
    while deadline.again(safe=True):
        tries += 1
    assert tries >= 2
    assert time.monotonic() - started < 0.2


def test_deadline_reports_a_close_rather_than_an_outage() -> None:
    def closed() -> None:
        raise EngineClosedError("closed")

    with pytest.raises(EngineClosedError):
        Deadline(5, check_open=closed).again(safe=True)


def test_base_still_exports_every_name_of_the_contract() -> None:
    # engines/base.py exported the data types too before the split; downstream engines use them
    new_limits = {"MAX_ID_CHARS", "MAX_TIMESTAMP_MS"}  # exported by types.py only
    before_the_split = set(types.__all__) - new_limits | {"EngineOptions", "ObservationQueueEngine"}
    before_the_split |= {"decode_payload", "encode_message", "normalize_session_id"}
    assert before_the_split | {"validate_content_session_id"} <= set(base.__all__)
    assert all(getattr(base, n) is getattr(types, n) for n in set(types.__all__) - new_limits)


class _CountingClaims(MemoryEngine):
    """An engine that changes how its iterator claims through the hook, not the iterator."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.ended = threading.Event()

    @contextlib.contextmanager
    def _claimer(
        self, sid: str, consumer_id: str, lease_s: float, stop: threading.Event | None
    ) -> Iterator[Claimer]:
        def claim() -> PendingMessageWithId | None:
            self.claims += 1
            return self._claim_next(sid, consumer_id, lease_s)

        try:
            yield claim
        finally:
            self.ended.set()


def test_the_claim_hook_serves_the_iterator_and_ends_with_it() -> None:
    engine = _CountingClaims()
    engine.enqueue("s", "c", PendingMessage("observation"))
    stop = threading.Event()
    it = engine.create_iterator("s", stop=stop)
    msg = next(it)
    engine.mark_processed(msg)
    stop.set()
    assert list(it) == []
    assert engine.claims >= 1
    assert engine.ended.is_set()


def test_huey_sqlite_works_without_redis_installed(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"  # what `import redis` does when it is absent
        "from obsqueue import open_engine, PendingMessage\n"
        f"with open_engine('huey+sqlite:///{tmp_path / 'q.db'}') as engine:\n"
        "    engine.enqueue('s', 'c', PendingMessage('observation', 'toolu_1'))\n"
        "    engine.mark_processed(engine.claim_next('s'))\n"
        "    print(engine.get_total_queue_depth())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
