"""Child processes the suite starts, signals and kills: producers, consumers, racers, holders.

Run as ``python -m obsqueue.conformance.workers '<config JSON>'``. Every worker opens the engine
from an ``EngineSpec``, logs each call to its own history file (invoke, then ok / fail; a call cut
short by a crash or an unreachable server is left without a completion, i.e. *unknown*), and
reports progress as JSON lines on stdout. Workers talk to the engine only through the contract.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obsqueue.conformance.history import HistoryWriter
from obsqueue.conformance.spec import EngineSpec
from obsqueue.engines.base import ObservationQueueEngine, PendingMessage, PendingMessageWithId
from obsqueue.errors import EngineUnavailableError, StaleClaimError

__all__ = ["main"]

_print_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """One progress line on stdout for the parent."""
    with _print_lock:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


def _open(config: dict[str, Any]) -> ObservationQueueEngine:
    spec = EngineSpec.from_json(json.dumps(config["spec"]))
    deadline = time.monotonic() + float(config.get("open_timeout_s", 20))
    while True:
        try:
            return spec.open()
        except EngineUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _history(config: dict[str, Any]) -> HistoryWriter:
    return HistoryWriter(Path(config["history_dir"]), config["process"])


def deliver_value(msg: PendingMessageWithId, iterated: str | None = None) -> dict[str, Any]:
    """The history value of a delivery; ``iterated`` is the session the consumer asked for."""
    claim = msg.claim
    return {
        "session": msg.session_id if iterated is None else iterated,
        "message_session": msg.session_id,
        "key": msg.payload.get("key") if isinstance(msg.payload, dict) else None,
        "message_id": msg.id,
        "attempt": msg.attempt,
        "token": claim.token if claim else None,
        "lease_expires_at_ms": claim.lease_expires_at_ms if claim else None,
    }


def produce(config: dict[str, Any]) -> None:
    """Enqueue ``count`` messages per session, round-robin, keys ``<prefix>-<session>-<i>``."""
    engine = _open(config)
    history = _history(config)
    interval_s = float(config.get("interval_s", 0.0))
    announced = False
    emit("ready")
    for i in range(int(config["count"])):
        for session in config["sessions"]:
            key = f"{config['key_prefix']}-{session}-{i}"
            tool_use_id = f"toolu-{key}" if config.get("tool_use_ids", True) else None
            message = PendingMessage("observation", tool_use_id, {"key": key, "i": i})
            op = history.invoke(
                "enqueue", {"session": session, "key": key, "tool_use_id": tool_use_id}
            )
            try:
                result = engine.enqueue(session, config.get("content_session", "cs"), message)
            except EngineUnavailableError:
                time.sleep(0.1)  # outcome unknown: left without a completion
                continue
            history.ok(
                op, "enqueue", {"message_id": result.message_id, "duplicate": result.duplicate}
            )
            if not announced:
                emit("enqueued")  # the first enqueue returned: a kill from now on lands mid-stream
                announced = True
        if interval_s:
            time.sleep(interval_s)
    emit("done")
    history.close()
    engine.close()


def _ack(engine: ObservationQueueEngine, history: HistoryWriter, msg: PendingMessageWithId) -> None:
    value = deliver_value(msg)
    op = history.invoke("ack", {k: value[k] for k in ("session", "key", "message_id", "token")})
    try:
        engine.mark_processed(msg)
    except StaleClaimError as exc:
        history.fail(op, "ack", {"error": f"StaleClaimError: {exc}"})
    except EngineUnavailableError:
        return  # outcome unknown
    else:
        history.ok(op, "ack", {})


def _consume_session(
    engine: ObservationQueueEngine,
    history: HistoryWriter,
    session: str,
    config: dict[str, Any],
    stop: threading.Event,
) -> None:
    process_s = float(config.get("process_ms", 0)) / 1000
    while not stop.is_set():
        try:
            for msg in engine.create_iterator(session, stop=stop):
                history.event("deliver", deliver_value(msg, session))
                if config.get("announce"):
                    emit("delivered", **deliver_value(msg, session), at_ns=time.time_ns())
                if process_s:
                    time.sleep(process_s)
                _ack(engine, history, msg)
        except EngineUnavailableError:
            time.sleep(0.1)


def _consume_many(
    engine: ObservationQueueEngine,
    history: HistoryWriter,
    sessions: list[str],
    config: dict[str, Any],
    stop: threading.Event,
) -> None:
    """One thread serving every session of ``sessions`` with the many-session iterator."""
    process_s = float(config.get("process_ms", 0)) / 1000
    asked = set(sessions)
    outside = f"none of {sorted(asked)}"  # a delivery from outside the set is misdelivered
    while not stop.is_set():
        try:
            for msg in engine.create_multi_session_iterator(sessions, stop=stop):
                iterated = msg.session_id if msg.session_id in asked else outside
                history.event("deliver", deliver_value(msg, iterated))
                if process_s:
                    time.sleep(process_s)
                _ack(engine, history, msg)
        except EngineUnavailableError:
            time.sleep(0.1)


def consume(config: dict[str, Any]) -> None:
    """One thread per session draining it (with ``many``: one thread serving them all with the
    many-session iterator), until ``stop_file`` appears (or stdin closes)."""
    engine = _open(config)
    history = _history(config)
    stop = threading.Event()
    stop_file = Path(config["stop_file"])
    jobs: list[tuple[Callable[..., None], Any]]
    if config.get("many"):
        jobs = [(_consume_many, config["sessions"])]
    else:
        jobs = [(_consume_session, s) for s in config["sessions"]]
    threads = [
        threading.Thread(target=job, args=(engine, history, arg, config, stop), daemon=True)
        for job, arg in jobs
    ]
    for thread in threads:
        thread.start()
    emit("ready")
    while not stop_file.exists():
        time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    emit("done")
    history.close()
    engine.close()


def enqueue_once(config: dict[str, Any]) -> None:
    """Race: wait until ``start_at`` (epoch s), enqueue one keyed message, print the result."""
    engine = _open(config)
    emit("ready")
    time.sleep(max(0.0, float(config["start_at"]) - time.time()))
    message = PendingMessage("observation", config["tool_use_id"], {"key": config["key"]})
    result = engine.enqueue(config["session"], config["content_session"], message)
    emit("result", message_id=result.message_id, duplicate=result.duplicate)
    engine.close()


def claim_and_hold(config: dict[str, Any]) -> None:
    """Claim the session's head, report it, then obey commands from stdin: ack, fail, exit."""
    engine = _open(config)
    emit("ready")
    deadline = time.monotonic() + float(config.get("claim_timeout_s", 10))
    msg = None
    while msg is None and time.monotonic() < deadline:
        msg = engine.claim_next(config["session"], lease_s=float(config["lease_s"]))
        if msg is None:
            time.sleep(0.02)
    if msg is None:
        emit("nothing")
        return
    emit("claimed", **deliver_value(msg, config["session"]))
    for line in sys.stdin:
        command = line.strip()
        if command == "exit":
            break
        try:
            if command == "ack":
                engine.mark_processed(msg)
            else:
                engine.mark_failed(msg, "held", retry=True)
        except StaleClaimError as exc:
            emit("result", outcome="StaleClaimError", detail=str(exc))
        else:
            emit("result", outcome="ok")
    engine.close()


ROLES: dict[str, Callable[[dict[str, Any]], None]] = {
    "produce": produce,
    "consume": consume,
    "enqueue_once": enqueue_once,
    "claim_and_hold": claim_and_hold,
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    config = json.loads(args[0])
    ROLES[config["role"]](config)


if __name__ == "__main__":
    main()
