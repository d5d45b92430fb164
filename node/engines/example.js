#!/usr/bin/env node
'use strict';
// The smallest engine over the obsqueue process protocol: everything in one Map, in this
// process. It cannot be shared by processes nor survive one, so it declares neither
// multi_process nor any durability: the suite reports those as unsupported. A downstream team
// starts from this file (docs/process-protocol.md, "Your own engine").

const { serve, stale, waiter } = require('../lib/protocol');

const CAPABILITIES = [
  'fifo', 'exclusive_session', 'dedupe', 'startup_recovery', 'stall_recovery', 'fencing',
  'fast_wakeup', 'fidelity', 'depth', 'clear', 'stop_and_idle', 'input_validation',
  'bounded_retries', 'close',
];

function createEngine(url, options) {
  const rows = new Map(); // id -> row; insertion order is id order
  const woken = waiter();
  let ids = 0;
  let tokens = 0;

  const head = (sessionId) => {
    for (const row of rows.values()) if (row.session_id === sessionId && row.status !== 'dead') return row;
    return null;
  };
  const held = ({ id, token }) => {
    const row = rows.get(id);
    if (!row || row.status !== 'processing' || row.claim_token !== token) {
      throw stale(`message ${id} is no longer held by claim ${token}: its lease expired and it was delivered again, or it was reset`);
    }
    return row;
  };
  const kill = (row, reason) => Object.assign(row, { status: 'dead', claim_token: null, last_error: reason });
  const delivered = (row) => ({ ...row, token: row.claim_token });
  const live = (row) => row.status !== 'dead';

  return {
    capabilities: CAPABILITIES,
    enqueue(m) {
      if (m.tool_use_id !== null) {
        for (const row of rows.values()) {
          if (live(row) && row.content_session_id === m.content_session_id && row.tool_use_id === m.tool_use_id) {
            return { message_id: row.id, duplicate: true };
          }
        }
      }
      const id = ++ids;
      rows.set(id, {
        id, session_id: m.session_id, content_session_id: m.content_session_id, kind: m.kind,
        tool_use_id: m.tool_use_id, payload_json: m.payload_json, original_timestamp: m.original_timestamp,
        enqueued_at_ms: Date.now(), status: 'pending', attempt: 0, available_at_ms: 0,
        claim_token: null, lease_expires_at_ms: null, consumer_id: '', last_error: null,
      });
      woken.wake();
      return { message_id: id, duplicate: false };
    },
    claimNext({ session_id, consumer_id, lease_ms }) {
      const row = head(session_id);
      const now = Date.now();
      if (row === null) return null;
      if (row.status === 'processing') {
        if (row.lease_expires_at_ms > now) return null;
        if (row.attempt >= options.max_attempts) return kill(row, 'lease expired on the last attempt') && null;
      } else if (row.available_at_ms > now) {
        return null;
      }
      Object.assign(row, {
        status: 'processing', attempt: row.attempt + 1, claim_token: ++tokens,
        lease_expires_at_ms: now + lease_ms, consumer_id,
      });
      return delivered(row);
    },
    wait({ wait_ms }) {
      return woken.wait(wait_ms);
    },
    markProcessed(claim) {
      rows.delete(held(claim).id);
      woken.wake();
    },
    markFailed({ reason, retry, retry_delay_ms, ...claim }) {
      const row = held(claim);
      if (!retry || row.attempt >= options.max_attempts) kill(row, reason);
      else Object.assign(row, { status: 'pending', claim_token: null, last_error: reason, available_at_ms: Date.now() + retry_delay_ms });
      woken.wake();
    },
    extendLease({ lease_ms, ...claim }) {
      const row = held(claim);
      row.lease_expires_at_ms = Date.now() + lease_ms;
      return { lease_expires_at_ms: row.lease_expires_at_ms, consumer_id: row.consumer_id };
    },
    pendingCount({ session_id }) {
      return [...rows.values()].filter((r) => r.session_id === session_id && live(r)).length;
    },
    totalDepth() {
      return [...rows.values()].filter(live).length;
    },
    clearPending({ session_id }) {
      const doomed = [...rows.values()].filter((r) => r.session_id === session_id && r.status === 'pending');
      for (const row of doomed) rows.delete(row.id);
      return doomed.length;
    },
    resetProcessing({ session_id }) {
      let moved = 0;
      for (const row of rows.values()) {
        if (row.status === 'processing' && (session_id === null || row.session_id === session_id)) {
          Object.assign(row, { status: 'pending', claim_token: null, lease_expires_at_ms: null, available_at_ms: 0 });
          moved += 1;
        }
      }
      if (moved) woken.wake();
      return moved;
    },
    inspectRaw() {
      return [...rows.values()].map((r) => ({ ...r, lease_expires_at_ms: r.claim_token ? r.lease_expires_at_ms : null }));
    },
    describe() {
      return { library: null, server: null, durability: { storage: 'program memory', survives_process_exit: false } };
    },
    destroy() {
      rows.clear();
    },
  };
}

serve(createEngine, { name: 'example' });
