"""The engines shipped in ``node/`` (a checkout's top level), run over the process protocol.

* ``exec+bullmq-node+redis://`` — BullMQ on Node (``node/engines/bullmq.js``);
* ``exec+bee-queue+redis://`` — Bee-Queue (``node/engines/bee-queue.js``);
* ``exec+example://`` — the smallest example engine, in memory (``node/engines/example.js``).

They need Node.js >= 18 on ``PATH`` and ``npm ci`` run in ``node/`` (the noxfile's ``install``
does it where Node.js is present). Without them, importing this module — which the registry does
when one of these schemes is opened — raises ``EngineUnavailableError`` saying what to install,
as a missing Python driver does; ``obsqueue engines`` shows the reason. Each engine's docstring
lists the glue its program adds to the library; the program's header comment says how.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from obsqueue.engines.base import Capability
from obsqueue.engines.process.engine import ProcessEngine, Program
from obsqueue.errors import EngineUnavailableError

__all__ = ["BeeQueueEngine", "BullMqNodeEngine", "ExampleNodeEngine", "NODE_DIR"]

#: ``node/`` at the top of the checkout this package was installed from (``pip install -e``).
NODE_DIR = Path(__file__).resolve().parents[4] / "node"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise EngineUnavailableError(
            "the Node engines need Node.js >= 18 on PATH (node was not found): install it, "
            f"then run `npm ci` in {NODE_DIR}"
        )
    if not (NODE_DIR / "package-lock.json").is_file():
        raise EngineUnavailableError(
            f"the Node engines run from a checkout of obsqueue: {NODE_DIR} has no "
            "package-lock.json; install obsqueue with `pip install -e .` from a clone"
        )
    if not (NODE_DIR / "node_modules").is_dir():
        raise EngineUnavailableError(
            f"the Node engines' libraries are not installed: run `npm ci` in {NODE_DIR}"
        )
    return node


NODE = _node()  # at import, like a missing driver: the registry reports it as unavailable

_ALL_BUT_DURABILITY = frozenset(Capability) - {
    Capability.MULTI_PROCESS,
    Capability.DURABLE_ENQUEUE,
    Capability.SERVER_CRASH_DURABLE,
    Capability.OS_CRASH_DURABLE,
    Capability.DURABLE_PROCESSING,
}


class _NodeEngine(ProcessEngine):
    """An engine program in ``node/engines/<script>``, run with the ``node`` found on PATH."""

    script: ClassVar[str] = ""

    def program(self) -> Program:
        return Program((NODE, str(NODE_DIR / "engines" / self.script)), cwd=str(NODE_DIR))


class ExampleNodeEngine(_NodeEngine):
    """``exec+example://`` — the smallest engine over the protocol: one Map in the program.

    It cannot be shared by processes nor survive one: like ``memory://`` it declares neither
    ``multi_process`` nor durability. No glue: it is the whole engine.
    """

    scheme: ClassVar[str] = "exec+example"
    script: ClassVar[str] = "example.js"
    capabilities: ClassVar[frozenset[Capability]] = _ALL_BUT_DURABILITY


class BullMqNodeEngine(_NodeEngine):
    """``exec+bullmq-node+redis://`` — BullMQ on Node: a queue per session, global concurrency 1,
    jobs claimed with BullMQ's manual job-fetching API (``Worker.getNextJob``) under BullMQ's lock
    token, acknowledged with ``moveToCompleted``/``moveToFailed``, stalls found by BullMQ's
    stalled checker (``lockDuration`` = lease, ``stalledInterval`` 500 ms, ``maxStalledCount`` =
    max_attempts - 1), dedupe by BullMQ's ``deduplication`` option, wakeup from ``QueueEvents``.

    Glue: message ids and fencing tokens from two INCR counters (passed as BullMQ's jobId and lock
    token); a set of session ids (for total depth, reset and the oracle); session id -> queue
    name (base64url); reset_processing reads each active job's lock key to hand BullMQ's
    ``moveToWait`` its token; the oracle reads BullMQ's keys raw. Durability is the Redis
    server's (AOF settings in ``describe()``).

    Not declared: ``dedupe``. BullMQ deduplicates within one queue; the contract's key
    ``(content_session_id, tool_use_id)`` spans sessions, so with a queue per session it does not
    hold across sessions (the option is still used, and holds within a session).
    """

    scheme: ClassVar[str] = "exec+bullmq-node+redis"
    script: ClassVar[str] = "bullmq.js"
    server_kind: ClassVar[str | None] = "redis"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {Capability.DEDUPE}
    glue: ClassVar[tuple[str, ...]] = (
        "message ids from INCR {prefix}:obsq:ids, passed as BullMQ's jobId m<id>",
        "fencing tokens from INCR {prefix}:obsq:tokens, passed as BullMQ's lock token",
        "a set of session ids, for total depth, reset and the oracle",
        "session id -> queue name (base64url; BullMQ queue names may not hold ':')",
        "reset_processing reads each active job's lock key for job.moveToWait(token)",
        "inspect_raw reads BullMQ's keys with raw commands",
    )


class BeeQueueEngine(_NodeEngine):
    """``exec+bee-queue+redis://`` — Bee-Queue on Node: a queue per session, jobs saved with
    retries and backoff, consumed with ``queue.process(1, handler)`` whose handler parks each job
    until ``claim_next`` takes it; stalls found by Bee-Queue's heartbeat and
    ``checkStalledJobs`` (``stallInterval`` = the engine's ``lease_s``).

    Not declared, because Bee-Queue cannot hold them: ``exclusive_session`` (concurrency is per
    process, not per queue), ``fencing`` (finishing a job takes no token), ``dedupe`` (only by
    custom job ids, which would replace the contract's integer ids) and ``startup_recovery``
    (no call returns a live job to waiting: ``reset_processing`` runs the stalled-job check).

    Glue: message ids from INCR (the custom job id), a delivery count per job, a set of session
    ids, session id -> queue name, a fencing token per delivery checked only in this program,
    retries set to 0 for ``mark_failed(retry=False)``, and the raw-key oracle.
    """

    scheme: ClassVar[str] = "exec+bee-queue+redis"
    script: ClassVar[str] = "bee-queue.js"
    server_kind: ClassVar[str | None] = "redis"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {
        Capability.EXCLUSIVE_SESSION,
        Capability.FENCING,
        Capability.DEDUPE,
        Capability.STARTUP_RECOVERY,
    }
    glue: ClassVar[tuple[str, ...]] = (
        "message ids from INCR {prefix}:obsq:ids, passed as the custom job id",
        "a delivery count per job in {prefix}:obsq:attempts (Bee-Queue counts retries left only)",
        "a set of session ids, for total depth, reset and the oracle",
        "session id -> queue name (base64url)",
        "a fencing token per delivery, checked only in the program that delivered it",
        "mark_failed(retry=False) sets the job's retries to 0 before failing it",
        "a parked-job handoff: process(1, handler) parks each job until claim_next takes it; "
        "claim_next waits up to 1 s for the push when jobs are waiting",
        "inspect_raw reads Bee-Queue's keys with raw commands",
    )
