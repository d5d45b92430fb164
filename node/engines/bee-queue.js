#!/usr/bin/env node
'use strict';
// exec+bee-queue+redis:// — Bee-Queue, the study's rejected option, used as its users do: one
// queue per session, `queue.createJob(data).retries(n).backoff(...).save()` to enqueue, and
// `queue.process(1, handler)` to consume, with stall detection (`stallInterval`,
// `queue.checkStalledJobs`) and removeOnSuccess.
//
// Bee-Queue is push-based: it has no call to fetch one job. The engine starts `process(1, h)`
// for a session on the first claim_next in this program; Bee-Queue then hands the handler one
// job at a time, the handler parks it until claim_next takes it, and mark_processed /
// mark_failed resolve or reject the handler's promise (Bee-Queue then writes the outcome).
// What that means, shown by the suite rather than hidden:
//   * a parked job is held by this process even before anyone asked for it;
//   * Bee-Queue limits concurrency per process, not per queue: two processes consuming a
//     session each hold one of its jobs (no exclusive_session);
//   * a job's stall heartbeat runs while this program runs, whatever the lease: a live consumer's
//     claim never expires, and lease_s per claim is not honoured (stallInterval is the engine's
//     lease_s);
//   * finishing a job takes no token: no fencing (this program refuses acks of jobs it does not
//     hold, which is all it can do);
//   * dedupe exists only as custom job ids, which would replace the contract's integer ids: not
//     declared;
//   * Bee-Queue loads its Lua scripts once, when a Queue connects, and calls EVALSHA without a
//     NOSCRIPT fallback: after the Redis server restarts (its script cache empty), enqueue and
//     the stalled-job check fail with NOSCRIPT until the Queue is made again. Left as it is:
//     that is what Bee-Queue's users get.
//
// Glue obsqueue adds (also in BeeQueueEngine's docstring):
//   * `{prefix}:obsq:ids` — INCR for message ids, passed as the custom job id;
//   * `{prefix}:obsq:attempts` — a hash counting deliveries per job (Bee-Queue counts only
//     retries left, and a stall costs none);
//   * `{prefix}:obsq:sessions` — a set of session ids; session id -> queue name (base64url);
//   * a local fencing token per delivery, checked only in this program;
//   * claim_next waits up to 1 s for Bee-Queue to push a job into the handler when jobs are
//     waiting (a push-based library has no "take one now");
//   * mark_failed without retry sets the job's retries to 0 before rejecting;
//   * inspect_raw (the suite's backdoor oracle) reads Bee-Queue's keys with raw commands.

const Queue = require('bee-queue');
const { serve, stale, waiter } = require('../lib/protocol');
const { connect, backend, lifecycle, serverDurability, versionOf, withDeadline } = require('../lib/redis');

const HANDOFF_WAIT_MS = 1000;
const CAPABILITIES = [
  'fifo', 'multi_process', 'durable_enqueue', 'server_crash_durable', 'os_crash_durable', 'durable_processing',
  'stall_recovery', 'fast_wakeup', 'fidelity', 'depth', 'clear', 'stop_and_idle',
  'input_validation', 'bounded_retries', 'close',
];

async function createEngine(url, options) {
  const client = await connect(url, options.connect_timeout_ms);
  const prefix = `bq-${options.namespace}`;
  const glue = (name) => `${prefix}:obsq:${name}`;
  const sessions = new Map(); // session id -> { queue, parked: [], woken, consuming }
  const held = new Map(); // message id -> { token, job, resolve, reject, done }
  const finished = new Map(); // job id -> resolve of the wait for Bee-Queue's write
  let tokens = 0;
  const logError = (err) => process.stderr.write(`bee-queue: ${err && err.message}\n`);
  const queueName = (sessionId) => 's' + Buffer.from(sessionId, 'utf8').toString('base64url');
  const redisSettings = { url, retry_strategy: () => 200 };

  async function session(sessionId) {
    let s = sessions.get(sessionId);
    if (s === undefined) {
      const queue = new Queue(queueName(sessionId), {
        prefix, redis: redisSettings, removeOnSuccess: true, activateDelayedJobs: true,
        stallInterval: options.lease_ms,
      });
      queue.on('error', logError);
      for (const event of ['succeeded', 'retrying', 'failed']) {
        queue.on(event, (job) => {
          const done = finished.get(job.id);
          if (done) done();
        });
      }
      s = { queue, parked: [], woken: waiter(), consuming: false, holding: 0 };
      s.ready = withDeadline(queue.ready(), options.connect_timeout_ms, 'connect');
      sessions.set(sessionId, s);
    }
    await s.ready;
    return s;
  }

  function consume(s) {
    if (s.consuming) return;
    s.consuming = true;
    s.queue.process(1, (job) => new Promise((resolve, reject) => {
      s.parked.push({ job, resolve, reject });
      s.woken.wake();
    }));
    // every half stallInterval, as Bee-Queue's docs advise; without a callback, so that a failed
    // check is emitted as the queue's 'error' (with one, Bee-Queue leaves a rejection unhandled)
    s.queue.checkStalledJobs(Math.max(1, Math.floor(options.lease_ms / 2))).catch(logError);
  }

  function claimOf({ id, token }) {
    const claim = held.get(id);
    if (!claim || claim.token !== token) {
      throw stale(`message ${id} is not held by claim ${token} in this process: its stall heartbeat lapsed and it was delivered again, or another process delivered it (Bee-Queue has no fencing tokens)`);
    }
    return claim;
  }

  async function finish(claim, outcome, processed) {
    held.delete(Number(claim.job.id));
    claim.session.holding -= 1;
    const written = new Promise((resolve) => finished.set(claim.job.id, resolve));
    outcome();
    await written; // Bee-Queue wrote the outcome: the answer may now say it is done
    finished.delete(claim.job.id);
    if (processed) await client.hdel(glue('attempts'), claim.job.id); // retried or dead: kept
  }

  async function counts(sessionId) {
    const h = await (await session(sessionId)).queue.checkHealth();
    return h.waiting + h.active + h.delayed;
  }

  async function rows(sessionId) {
    const base = `${prefix}:${queueName(sessionId)}`;
    const [jobs, waiting, active, delayed, failed, attempts] = await client.multi()
      .hgetall(`${base}:jobs`).lrange(`${base}:waiting`, 0, -1).lrange(`${base}:active`, 0, -1)
      .zrange(`${base}:delayed`, 0, -1).smembers(`${base}:failed`).hgetall(glue('attempts')).exec();
    const status = {};
    for (const id of waiting[1].concat(delayed[1])) status[id] = 'pending';
    for (const id of active[1]) status[id] = 'processing';
    for (const id of failed[1]) status[id] = 'dead';
    return Object.entries(jobs[1] || {}).filter(([id]) => status[id]).map(([id, text]) => {
      const { data, options: o } = JSON.parse(text);
      const mine = held.get(Number(id));
      return {
        ...data, id: Number(id), status: status[id], attempt: Number(attempts[1][id] || 0),
        claim_token: mine ? mine.token : null, lease_expires_at_ms: null,
        last_error: o.stacktraces && o.stacktraces.length ? String(o.stacktraces[0]).split('\n')[0] : null,
      };
    });
  }

  return {
    capabilities: CAPABILITIES,

    enqueue: (m) => backend('enqueue', async () => {
      const s = await session(m.session_id);
      await client.sadd(glue('sessions'), m.session_id);
      const id = await client.incr(glue('ids'));
      const job = s.queue.createJob({ ...m, enqueued_at_ms: Date.now() }).setId(String(id)).retries(options.max_attempts - 1);
      if (options.retry_backoff_ms > 0) job.backoff('exponential', options.retry_backoff_ms);
      await job.save();
      return { message_id: id, duplicate: false };
    }),

    claimNext: ({ session_id, consumer_id, lease_ms }) => backend('claim_next', async () => {
      const s = await session(session_id);
      consume(s);
      if (!s.parked.length && !s.holding && (await s.queue.checkHealth()).waiting > 0) {
        // jobs wait: give Bee-Queue's push time to park one (unless it did meanwhile)
        if (!s.parked.length) await s.woken.wait(HANDOFF_WAIT_MS);
      }
      const next = s.parked.shift();
      if (next === undefined) return null;
      const token = ++tokens;
      const attempt = await client.hincrby(glue('attempts'), next.job.id, 1);
      held.set(Number(next.job.id), { ...next, token, session: s });
      s.holding += 1;
      return {
        ...next.job.data, id: Number(next.job.id), attempt, token,
        lease_expires_at_ms: Date.now() + lease_ms, consumer_id,
      };
    }),

    wait: ({ session_id, wait_ms }) => backend('wait', async () => {
      const s = await session(session_id);
      consume(s);
      if (s.parked.length) return null;
      return s.woken.wait(wait_ms);
    }, 2 * wait_ms + 2000),

    markProcessed: (c) => backend('mark_processed', () => {
      const claim = claimOf(c);
      return finish(claim, () => claim.resolve(null), true);
    }),

    markFailed: ({ reason, retry, ...c }) => backend('mark_failed', async () => {
      const claim = claimOf(c);
      const attempts = Number(await client.hget(glue('attempts'), claim.job.id));
      if (!retry || attempts >= options.max_attempts) claim.job.options.retries = 0;
      return finish(claim, () => claim.reject(new Error(reason)), false);
    }),

    extendLease: ({ lease_ms, ...c }) => backend('extend_lease', () => {
      claimOf(c); // Bee-Queue's heartbeat keeps a held job; there is no lease to push out
      return { lease_expires_at_ms: Date.now() + lease_ms, consumer_id: '' };
    }),

    pendingCount: ({ session_id }) => backend('pending_count', () => counts(session_id)),

    totalDepth: () => backend('total_depth', async () => {
      const all = await Promise.all((await client.smembers(glue('sessions'))).map(counts));
      return all.reduce((a, b) => a + b, 0);
    }),

    clearPending: ({ session_id }) => backend('clear_pending', async () => {
      const s = await session(session_id);
      const page = { start: 0, end: -1 };
      const jobs = [...(await s.queue.getJobs('waiting', page)), ...(await s.queue.getJobs('delayed', page))];
      await Promise.all(jobs.map((job) => s.queue.removeJob(job.id)));
      return jobs.length;
    }),

    // Bee-Queue's startup recovery is its stalled-job check: jobs whose heartbeat lapsed go
    // back to waiting. A claim whose process still runs is not touched.
    resetProcessing: ({ session_id }) => backend('reset_processing', async () => {
      const ids = session_id === null ? await client.smembers(glue('sessions')) : [session_id];
      let moved = 0;
      for (const sid of ids) {
        const s = await session(sid);
        moved += (await s.queue.checkStalledJobs()) || 0;
      }
      return moved;
    }),

    inspectRaw: () => backend('inspect_raw', async () => {
      const all = await Promise.all((await client.smembers(glue('sessions'))).map(rows));
      return all.flat();
    }),

    describe: () => backend('describe', async () => ({
      library: { 'bee-queue': versionOf('bee-queue'), redis: versionOf('redis', 'bee-queue'), ioredis: versionOf('ioredis') },
      client: { stall_interval_ms: options.lease_ms, removeOnSuccess: true },
      ...(await serverDurability(client)),
    })),

    ...lifecycle(client, prefix, closeSessions),
  };

  async function closeSessions() {
    const all = [...sessions.values()];
    sessions.clear();
    held.clear();
    await Promise.all(all.map((s) => s.queue.close(500).catch(logError)));
  }
}

serve(createEngine, { name: 'bee-queue', runtime: { 'bee-queue': versionOf('bee-queue') } });
