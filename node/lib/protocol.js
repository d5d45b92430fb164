'use strict';
// The obsqueue engine process protocol, version 1, on the program's side (docs/process-protocol.md).
//
// serve(createEngine) reads one JSON request per line on stdin, runs it on the engine (requests
// run concurrently: a bounded `wait` does not hold up an `enqueue`), and writes one JSON answer
// per line on stdout, matched by `id`. stdout carries answers only: anything else goes to
// stderr. stdin reaching EOF means the Python side is gone: the engine is closed (bounded) and
// the program exits, so nothing is left running.

const readline = require('node:readline');

const PROTOCOL_VERSION = 1;
const CLOSE_WAIT_MS = 3000;

class ContractError extends Error {
  constructor(type, message, field) {
    super(message);
    this.type = type;
    this.field = field;
  }
}

/** An argument is invalid (names the field); nothing was written. */
const invalid = (field, message) => new ContractError('InvalidMessageError', message, field);
/** The claim no longer holds: the lease expired and the message went to someone else, or reset. */
const stale = (message) => new ContractError('StaleClaimError', message);
/** The backend cannot be reached; say whether the outcome of the call is unknown. */
const unavailable = (message) => new ContractError('EngineUnavailableError', message);

function errorAnswer(err) {
  if (err instanceof ContractError) {
    const error = { type: err.type, message: err.message };
    if (err.field) error.field = err.field;
    return error;
  }
  // Anything else is a bug or a backend failure the engine did not translate: reported as such.
  return { type: 'EngineUnavailableError', message: `${err && err.name}: ${err && err.message}` };
}

/** wait(ms) resolves to null after `ms`, or as soon as wake() is called, whichever is first. */
function waiter() {
  let wakers = new Set();
  return {
    wait(ms) {
      return new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          wakers.delete(done);
          resolve(null);
        };
        const timer = setTimeout(done, ms);
        wakers.add(done);
      });
    },
    wake() {
      const now = wakers;
      wakers = new Set();
      for (const done of now) done();
    },
  };
}

function serve(createEngine, { name = 'engine', runtime = {} } = {}) {
  let engine = null;
  let closing = null;
  const write = (answer) => process.stdout.write(JSON.stringify(answer) + '\n');

  async function handle(request) {
    const { id, op, args = {} } = request;
    try {
      if (op === 'hello') {
        if (args.protocol !== PROTOCOL_VERSION) {
          // Answer with our version: the Python side names the mismatch.
          return write({ id, ok: { protocol: PROTOCOL_VERSION, engine: name } });
        }
        engine = await createEngine(args.url, args.options);
        const capabilities = engine.capabilities ? [...engine.capabilities] : undefined;
        const node = { node: process.version, ...runtime };
        return write({ id, ok: { protocol: PROTOCOL_VERSION, engine: name, capabilities, runtime: node } });
      }
      if (op === 'close') {
        await close();
        return write({ id, ok: null });
      }
      if (engine === null) throw unavailable(`'${op}' before 'hello'`);
      if (closing !== null) throw new ContractError('EngineClosedError', 'the engine is closing');
      const method = OPERATIONS[op];
      if (method === undefined || typeof engine[method] !== 'function') {
        throw unavailable(`this program does not implement '${op}'`);
      }
      const ok = await engine[method](args);
      write({ id, ok: ok === undefined ? null : ok });
    } catch (err) {
      write({ id, error: errorAnswer(err) });
    }
  }

  function close() {
    if (closing === null) {
      const work = engine && typeof engine.close === 'function' ? engine.close() : null;
      const bounded = new Promise((resolve) => setTimeout(resolve, CLOSE_WAIT_MS).unref());
      closing = Promise.race([Promise.resolve(work).catch(() => undefined), bounded]);
    }
    return closing;
  }

  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    let request;
    try {
      request = JSON.parse(line);
    } catch (err) {
      process.stderr.write(`obsqueue-protocol: not JSON, ignored: ${line.slice(0, 200)}\n`);
      return;
    }
    handle(request);
  });
  lines.on('close', async () => {
    await close();
    process.exit(0);
  });
  process.on('unhandledRejection', (err) => {
    // a library's background promise (a timer's check, a reconnect): logged, not fatal
    process.stderr.write(`obsqueue-protocol: unhandled rejection: ${err && err.stack}\n`);
  });
  process.on('uncaughtException', (err) => {
    process.stderr.write(`obsqueue-protocol: uncaught: ${err && err.stack}\n`);
    process.exit(70);
  });
}

// op -> engine method name
const OPERATIONS = {
  enqueue: 'enqueue',
  claim_next: 'claimNext',
  wait: 'wait',
  mark_processed: 'markProcessed',
  mark_failed: 'markFailed',
  extend_lease: 'extendLease',
  pending_count: 'pendingCount',
  total_depth: 'totalDepth',
  clear_pending: 'clearPending',
  reset_processing: 'resetProcessing',
  inspect_raw: 'inspectRaw',
  describe: 'describe',
  destroy: 'destroy',
};

module.exports = { PROTOCOL_VERSION, ContractError, invalid, stale, unavailable, serve, waiter };
