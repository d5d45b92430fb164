"""BullMQ adapter: ``bullmq+redis://`` over BullMQ's Python package (drivers: bullmq, redis-py).

BullMQ's Python package runs the same Lua scripts as the Node library, so the keys it writes are
the ones a Node BullMQ worker or a dashboard (bull-board, Taskforce) reads.

How a per-session stream maps onto BullMQ (as the app's server build did it):

* **A queue per session**, named by the session id percent-encoded (BullMQ queue names may not
  hold ``:``), under the key prefix ``obsq-bullmq:<namespace>``; **global concurrency 1** on each
  (``Queue.setGlobalConcurrency(1)``, open-source BullMQ), so at most one job of a session is
  active across every worker and process (P2). Groups (BullMQ Pro) are not used.
* **A message is a job**: ``Queue.add(kind, envelope, opts)`` with ``jobId`` ``m<id>``,
  ``attempts = max_attempts``, ``removeOnComplete`` (processed = deleted), ``removeOnFail:
  false`` (dead = kept in the failed set), and, when ``retry_backoff_s`` > 0, a custom backoff
  strategy (exponential with jitter, capped) in the workers' ``settings.backoffStrategy``.
* **Consumers are manual workers** (``Worker(name, None, {autorun: False, lockDuration})``, one
  per session and lease): a claim is ``worker.moveToActive(token)`` (what ``getNextJob`` runs),
  acks are ``job.moveToCompleted`` / ``job.moveToFailed`` under the token, renewals
  ``extendLock``. The lock token is the fencing token: BullMQ refuses a stale one (P8).
  ``mark_failed(retry=False)`` fails with ``UnrecoverableError``, as BullMQ users do.
* **Stalled jobs**: when a claim finds nothing, it runs BullMQ's stalled-job check
  (``moveStalledJobsToWait``, rate-limited by BullMQ to one per ``stalled_interval_s``, default
  0.25 s; BullMQ's own default is 30 s), as a worker's timer would; ``maxStalledCount`` is
  ``max_attempts - 1``, and a job stalled past it is failed by the next claim, as
  ``Worker.processJob`` does with ``deferredFailure``. A stalled job goes back to the front.
* **Dedupe**: BullMQ's ``deduplication`` option (simple mode: while the job is waiting, delayed
  or active) with the id ``content_session_id`` + ``tool_use_id``. Its scope is one queue.
* **Wakeup**: BullMQ's marker key, waited on with ``BZPOPMIN`` as a drained worker does.
* **Durability**: every state change is one BullMQ Lua script; under ``appendonly yes`` +
  ``appendfsync always`` Redis fsyncs before it replies (``describe()`` reads the live settings).

What obsqueue adds (``BullmqEngine.glue``): integer message ids from an INCR counter; a set of
session ids (total depth, reset of every session, the oracle); startup recovery as "void the
session's locks, then run BullMQ's stalled check" (a reset counts as a stall); ``clear`` as
BullMQ's drain script inside one MULTI with the counts; integer lock tokens; the private event
loop.

What BullMQ does not give, reported by the suite rather than patched:

* a job retried by ``moveToFailed`` goes to the **back** of its queue (``retryJob`` LPUSHes it;
  with a backoff it waits in the delayed set and is promoted to the back), so later messages
  of its session are delivered before it (P1);
* deduplication is per queue, so per session here, not per content session across sessions
  (P3 is therefore not declared);
* stalls and failures are counted apart (``stc`` against ``maxStalledCount``, ``attemptsMade``
  against ``attempts``), so a message that both stalls and fails may get more deliveries than
  ``max_attempts``.
"""
