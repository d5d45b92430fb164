'use strict';
// The Redis side the Node engines share, on ioredis: connect by a deadline, translate connection
// errors into the contract's EngineUnavailableError, read the server's durability settings for
// describe(), and delete a namespace's keys. What each library gives stays in its engine file.

const Redis = require('ioredis');
const { unavailable } = require('./protocol');

const OP_TIMEOUT_MS = 8000; // below the Python side's call_timeout_s (10 s): we answer first

/** A connected ioredis client, or EngineUnavailableError within `connectTimeoutMs`. */
async function connect(url, connectTimeoutMs, extra = {}) {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: connectTimeoutMs,
    maxRetriesPerRequest: null, // BullMQ's blocking connections require it
    enableOfflineQueue: false, // a command while disconnected fails at once: "not sent"
    // A command in flight when the connection drops is not sent again after the reconnect: it
    // may have run (a kill -9 after the fsync, before the reply), and its second run would then
    // answer "missing lock" for an acknowledgement that took effect. Left unanswered, it meets
    // its deadline and is reported as of unknown outcome, which is what it is.
    autoResendUnfulfilledCommands: false,
    retryStrategy: (times) => Math.min(50 * times, 500),
    ...extra,
  });
  client.on('error', (err) => process.stderr.write(`redis: ${err.message}\n`));
  try {
    await withDeadline(client.connect(), connectTimeoutMs, 'connect');
  } catch (err) {
    client.disconnect();
    throw unavailable(`cannot reach ${redact(url)} within ${connectTimeoutMs} ms: ${err.message}; start the server or fix the URL`);
  }
  return client;
}

/** Run `promise` for at most `ms`; a late or failed one becomes EngineUnavailableError. */
async function withDeadline(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no reply to ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

const CONNECTION = /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|Connection is closed|Stream isn't writeable|no reply to|LOADING|MISCONF|READONLY|OOM|NOREPLICAS/;

/** Run a backend operation by a deadline, translating connection failures once. */
async function backend(what, work, ms = OP_TIMEOUT_MS) {
  try {
    return await withDeadline(Promise.resolve().then(work), ms, what);
  } catch (err) {
    if (err && err.type) throw err; // already a contract error
    if (err && CONNECTION.test(String(err.message))) {
      throw unavailable(`${what} failed, so its outcome is unknown: ${err.message}`);
    }
    throw err;
  }
}

/** describe()'s server part: version and the durability settings in force, read live. */
async function serverDurability(client) {
  const info = await client.info('server');
  const version = /redis_version:(\S+)/.exec(info);
  const mode = /redis_mode:(\S+)/.exec(info);
  let durability;
  try {
    const [, appendonly, , appendfsync, , save] = await configGet(client);
    durability = { appendonly, appendfsync, save, server_crash_durable: appendonly === 'yes' && appendfsync === 'always' };
  } catch (err) {
    durability = { config: `unavailable: CONFIG GET was refused (${err.message})`, server_crash_durable: null };
  }
  return {
    server: { kind: 'redis', version: version && version[1], mode: mode && mode[1] },
    durability,
  };
}

async function configGet(client) {
  const reply = await client.config('GET', 'appendonly', 'appendfsync', 'save');
  const found = {};
  for (let i = 0; i < reply.length; i += 2) found[reply[i]] = reply[i + 1];
  return ['appendonly', found.appendonly, 'appendfsync', found.appendfsync, 'save', found.save];
}

/** UNLINK every key under `pattern` (SCAN, then batches of 500). */
async function unlinkMatching(client, pattern) {
  const keys = [];
  let cursor = '0';
  do {
    const [next, found] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  for (let i = 0; i < keys.length; i += 500) await client.unlink(...keys.slice(i, i + 500));
}

/** destroy() and close() of an engine whose keys are all under `prefix` and whose library
 * objects `closeSessions()` closes. */
function lifecycle(client, prefix, closeSessions) {
  return {
    destroy: () => backend('destroy', async () => {
      await closeSessions();
      await unlinkMatching(client, `${prefix}:*`);
    }, 30000),
    async close() {
      await closeSessions();
      client.disconnect();
    },
  };
}

function redact(url) {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

/** The installed version of a package in node_modules (as `from` resolves it, when given:
 * Bee-Queue's own node-redis is nested under it). */
function versionOf(name, from) {
  try {
    const paths = from ? [require.resolve(from)] : undefined;
    return require(require.resolve(`${name}/package.json`, { paths })).version;
  } catch (err) {
    return null;
  }
}

module.exports = { connect, backend, lifecycle, serverDurability, versionOf, withDeadline };
