#!/usr/bin/env node
'use strict';
// exec+bullmq-node+redis:// — BullMQ on Node, as the app's server build uses it: one queue per
// session, claimed through BullMQ's manual job-fetching API (Worker.getNextJob with block:false,
// job.moveToCompleted / moveToFailed / extendLock under the job's lock token), with the queue's
// global concurrency set to 1 so one job per session is active across every process.
//
// What BullMQ gives: jobs and their states, lock tokens checked on every finish (fencing), the
// stalled-job checker (lockDuration / stalledInterval / maxStalledCount), attempts with
// backoff, deduplication while a job is waiting or active (`deduplication: {id}`), global
// concurrency, QueueEvents for wakeup, and every write as one Lua script.
//
// Glue obsqueue adds (also in BullMqNodeEngine's docstring):
//   * `{prefix}:obsq:ids` — INCR for message ids, passed as the jobId `m<id>` (ids unique over
//     sessions; BullMQ refuses integer-like custom ids);
//   * `{prefix}:obsq:tokens` — INCR for fencing tokens, passed as BullMQ's lock token;
//   * `{prefix}:obsq:sessions` — a set of session ids, for total depth, reset and the oracle;
//   * the session id -> queue name mapping (base64url: queue names may not hold ':');
//   * reset_processing reads each active job's lock token from BullMQ's `<job>:lock` key and
//     hands it to job.moveToWait (BullMQ has no "give back every active job" call);
//   * inspect_raw (the suite's backdoor oracle) reads BullMQ's keys with raw commands.

const { Queue, Worker, QueueEvents, Job, UnrecoverableError } = require('bullmq');
const { serve, stale, waiter } = require('../lib/protocol');
const { connect, backend, lifecycle, serverDurability, versionOf } = require('../lib/redis');

// Not 'dedupe': BullMQ deduplicates within one queue, and the contract's key
// (content_session_id, tool_use_id) spans sessions, so across two sessions' queues it does not
// hold. The deduplication option is still used: within a session it holds.
const CAPABILITIES = [
  'fifo', 'exclusive_session', 'multi_process', 'durable_enqueue',
  'server_crash_durable', 'os_crash_durable', 'durable_processing', 'startup_recovery', 'stall_recovery', 'fencing',
  'fast_wakeup', 'fidelity', 'depth', 'clear', 'stop_and_idle', 'input_validation',
  'bounded_retries', 'close',
];
const PENDING_STATES = ['wait', 'delayed', 'prioritized', 'paused', 'waiting-children'];
const STALLED_INTERVAL_MS = 500;
const STALE = /Missing lock|Lock mismatch|is not in the active state|Missing key for job/;

async function createEngine(url, options) {
  const client = await connect(url, options.connect_timeout_ms);
  const prefix = `bullmq-${options.namespace}`;
  const glue = (name) => `${prefix}:obsq:${name}`;
  const sessions = new Map(); // session id -> { queue, worker, events, woken, seq, seen }
  const jobs = new Map(); // message id -> Job delivered by this program (saves a read on ack)
  const logError = (what) => (err) => process.stderr.write(`bullmq ${what}: ${err.message}\n`);

  const jobIdOf = (messageId) => `m${messageId}`; // BullMQ refuses integer-like custom ids
  const messageIdOf = (jobId) => Number(String(jobId).slice(1));
  const queueName = (sessionId) => 's' + Buffer.from(sessionId, 'utf8').toString('base64url');

  async function session(sessionId) {
    let s = sessions.get(sessionId);
    if (s === undefined) {
      const name = queueName(sessionId);
      const queue = new Queue(name, { connection: client, prefix });
      queue.on('error', logError('queue'));
      s = { queue, worker: null, events: null, woken: waiter(), seq: 0, seen: 0 };
      s.ready = queue.setGlobalConcurrency(1);
      sessions.set(sessionId, s);
    }
    await s.ready;
    return s;
  }

  function worker(s) {
    if (s.worker === null) {
      s.worker = new Worker(s.queue.name, null, {
        connection: client,
        prefix,
        autorun: false,
        lockDuration: options.lease_ms,
        stalledInterval: STALLED_INTERVAL_MS,
        maxStalledCount: Math.max(0, options.max_attempts - 1),
      });
      s.worker.on('error', logError('worker'));
      s.worker.startStalledCheckTimer();
    }
    return s.worker;
  }

  function listen(s) {
    if (s.events === null) {
      s.events = new QueueEvents(s.queue.name, { connection: client, prefix });
      s.events.on('error', logError('events'));
      const wake = () => {
        s.seq += 1;
        s.woken.wake();
      };
      for (const event of ['waiting', 'completed', 'failed', 'stalled', 'delayed']) s.events.on(event, wake);
    }
  }

  async function jobOf({ id, session_id }) {
    const job = jobs.get(id) || (await Job.fromId((await session(session_id)).queue, jobIdOf(id)));
    if (!job) throw stale(`message ${id} is gone: it was acknowledged, cleared or reset`);
    return job;
  }

  async function underClaim(claim, work) {
    try {
      return await work(await jobOf(claim));
    } catch (err) {
      if (err && STALE.test(String(err.message))) {
        jobs.delete(claim.id);
        throw stale(`message ${claim.id} is no longer held by claim ${claim.token}: ${err.message}`);
      }
      throw err;
    }
  }

  async function closeSessions() {
    const all = [...sessions.values()];
    sessions.clear();
    jobs.clear();
    await Promise.all(all.flatMap((s) => [s.worker && s.worker.close(true), s.events && s.events.close(), s.queue.close()]));
  }

  async function knownSessions() {
    return client.smembers(glue('sessions'));
  }

  async function pendingCount(sessionId) {
    const counts = await (await session(sessionId)).queue.getJobCounts(...PENDING_STATES, 'active');
    return Object.values(counts).reduce((a, b) => a + b, 0);
  }

  function asDelivered(job, token, leaseExpiresAtMs, consumerId) {
    const d = job.data;
    return {
      id: messageIdOf(job.id), session_id: d.session_id, content_session_id: d.content_session_id,
      kind: d.kind, tool_use_id: d.tool_use_id, payload_json: d.payload_json,
      original_timestamp: d.original_timestamp, enqueued_at_ms: d.enqueued_at_ms,
      attempt: job.attemptsStarted, token, lease_expires_at_ms: leaseExpiresAtMs, consumer_id: consumerId,
    };
  }

  async function rawOf(s, jobId, status) {
    const key = `${prefix}:${s.queue.name}:${jobId}`;
    const [hash, lock, expires] = await client.multi().hgetall(key).get(`${key}:lock`).call('PEXPIRETIME', `${key}:lock`).exec();
    const h = hash[1];
    if (!h || !h.data) return null;
    const d = JSON.parse(h.data);
    const token = lock[1] === null ? null : Number(lock[1]);
    return {
      id: messageIdOf(jobId), session_id: d.session_id, content_session_id: d.content_session_id,
      kind: d.kind, tool_use_id: d.tool_use_id, payload_json: d.payload_json,
      original_timestamp: d.original_timestamp, status, attempt: Number(h.ats || 0),
      claim_token: status === 'processing' ? token : null,
      lease_expires_at_ms: status === 'processing' && token !== null ? Number(expires[1]) : null,
      last_error: h.failedReason || null,
    };
  }

  return {
    capabilities: CAPABILITIES,

    enqueue: (m) => backend('enqueue', async () => {
      const s = await session(m.session_id);
      const [, [, n]] = await client.multi().sadd(glue('sessions'), m.session_id).incr(glue('ids')).exec();
      const id = jobIdOf(n);
      const opts = {
        jobId: id,
        attempts: options.max_attempts,
        removeOnComplete: true,
        removeOnFail: false,
      };
      if (options.retry_backoff_ms > 0) opts.backoff = { type: 'exponential', delay: options.retry_backoff_ms };
      if (m.tool_use_id !== null) opts.deduplication = { id: JSON.stringify([m.content_session_id, m.tool_use_id]) };
      const data = { ...m, enqueued_at_ms: Date.now() };
      const job = await s.queue.add(m.kind, data, opts);
      return { message_id: messageIdOf(job.id), duplicate: job.id !== id };
    }),

    claimNext: ({ session_id, consumer_id, lease_ms }) => backend('claim_next', async () => {
      const s = await session(session_id);
      s.seen = s.seq;
      const w = worker(s);
      let token, job;
      for (;;) {
        token = String(await client.incr(glue('tokens')));
        job = await w.getNextJob(token, { block: false });
        if (!job) return null;
        // as BullMQ's own processing loop does: a job that stalled more than maxStalledCount
        // times comes back with a deferred failure, applied when it is next fetched
        if (!job.deferredFailure) break;
        await job.moveToFailed(new UnrecoverableError(job.deferredFailure), token, false);
      }
      const leaseExpiresAtMs = Date.now() + lease_ms;
      if (lease_ms !== options.lease_ms) await job.extendLock(token, lease_ms);
      jobs.set(messageIdOf(job.id), job);
      return asDelivered(job, Number(token), leaseExpiresAtMs, consumer_id);
    }),

    wait: ({ session_id, wait_ms }) => backend('wait', async () => {
      const s = await session(session_id);
      listen(s);
      if (s.seq !== s.seen) return null; // woken between the claim and this wait
      return s.woken.wait(wait_ms);
    }, 2 * wait_ms + 2000),

    markProcessed: (claim) => backend('mark_processed', () => underClaim(claim, async (job) => {
      await job.moveToCompleted(null, String(claim.token), false);
      jobs.delete(claim.id);
    })),

    markFailed: ({ reason, retry, ...claim }) => backend('mark_failed', () => underClaim(claim, async (job) => {
      const err = retry ? new Error(reason) : new UnrecoverableError(reason);
      await job.moveToFailed(err, String(claim.token), false);
      jobs.delete(claim.id);
    })),

    extendLease: ({ lease_ms, ...claim }) => backend('extend_lease', () => underClaim(claim, async (job) => {
      const at = Date.now() + lease_ms;
      const extended = await job.extendLock(String(claim.token), lease_ms);
      if (!extended) throw stale(`message ${claim.id} is no longer held by claim ${claim.token}`);
      return { lease_expires_at_ms: at, consumer_id: '' };
    })),

    pendingCount: ({ session_id }) => backend('pending_count', () => pendingCount(session_id)),

    totalDepth: () => backend('total_depth', async () => {
      const counts = await Promise.all((await knownSessions()).map(pendingCount));
      return counts.reduce((a, b) => a + b, 0);
    }),

    clearPending: ({ session_id }) => backend('clear_pending', async () => {
      const s = await session(session_id);
      const waiting = await s.queue.getJobs(PENDING_STATES);
      const removed = await Promise.all(waiting.map((job) => job.remove().then(() => 1, () => 0)));
      return removed.reduce((a, b) => a + b, 0);
    }),

    resetProcessing: ({ session_id }) => backend('reset_processing', async () => {
      const ids = session_id === null ? await knownSessions() : [session_id];
      let moved = 0;
      for (const sid of ids) {
        const s = await session(sid);
        for (const job of await s.queue.getJobs(['active'])) {
          const token = await client.get(`${prefix}:${s.queue.name}:${job.id}:lock`);
          if (token === null) continue; // stalled already: BullMQ's checker gives it back
          await job.moveToWait(token).then(() => { moved += 1; }, logError('reset'));
          jobs.delete(messageIdOf(job.id));
        }
      }
      return moved;
    }),

    inspectRaw: () => backend('inspect_raw', async () => {
      const rows = [];
      for (const sid of await knownSessions()) {
        const s = await session(sid);
        const base = `${prefix}:${s.queue.name}`;
        const lists = [
          ['pending', await client.lrange(`${base}:wait`, 0, -1)],
          ['pending', await client.lrange(`${base}:paused`, 0, -1)],
          ['pending', await client.zrange(`${base}:delayed`, 0, -1)],
          ['pending', await client.zrange(`${base}:prioritized`, 0, -1)],
          ['processing', await client.lrange(`${base}:active`, 0, -1)],
          ['dead', await client.zrange(`${base}:failed`, 0, -1)],
        ];
        for (const [status, jobIds] of lists) {
          for (const jobId of jobIds) {
            const row = await rawOf(s, jobId, status);
            if (row) rows.push(row);
          }
        }
      }
      return rows;
    }),

    describe: () => backend('describe', async () => ({
      library: { bullmq: versionOf('bullmq'), ioredis: versionOf('ioredis') },
      client: { stalled_interval_ms: STALLED_INTERVAL_MS, global_concurrency: 1 },
      ...(await serverDurability(client)),
    })),

    ...lifecycle(client, prefix, closeSessions),
  };
}

serve(createEngine, { name: 'bullmq-node', runtime: { bullmq: versionOf('bullmq') } });
