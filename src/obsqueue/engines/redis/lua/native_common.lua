-- native_common.lua: the native family's helpers, prepended (after the shared lib.lua) to every
-- other native_*.lua script when it is loaded. Not a script of its own.
--
-- Layout (P = the key prefix "{namespace}:", hash-tagged so a cluster keeps it in one slot):
--   P.."ids"        INCR counter of message ids (never reused)
--   P.."tokens"     INCR counter of fencing tokens (never reused)
--   P.."depth"      messages pending or in flight, all sessions (kept by these scripts)
--   P.."dedupe"     hash: dedupe field -> id, held while the message is pending or in flight
--   P.."inflight"   set of ids in flight (status processing)
--   P.."m:"..id     hash: one message's fields (status pending | processing | dead)
--   P.."p:"..id     string: its payload (JSON text), apart so the hash stays a small listpack
--   P.."s:"..sess   sorted set of the session's not-dead ids, score = id (head = lowest)
--   P.."w:"..sess   list of wake tokens (at most one) a blocked consumer BLPOPs
--   P.."sessions"   sorted set of the sessions with a message pending or in flight, score = the
--                   session's head id (oldest head first)
--   P.."wake"       list of wake tokens (at most WAKE_ANY_CAP) for consumers of every session

-- Several consumers of every session may wait at once, and each BLPOP takes one token: a burst
-- of wakes leaves up to this many, so that many waiters wake. A claim round over every session
-- that finds nothing more deletes them (no spin on stale tokens).
local WAKE_ANY_CAP = 64

-- A head of the session may be claimable now: wake a consumer blocked on the session (its own
-- list, lib.lua's wake) and one blocked on every session (P.."wake").
local function signal(prefix, session)
  wake(prefix, session)
  local akey = prefix .. 'wake'
  redis.call('LPUSH', akey, '1')
  redis.call('LTRIM', akey, 0, WAKE_ANY_CAP - 1)
  redis.call('PEXPIRE', akey, WAKE_TTL_MS)
end

-- Keep the session's entry in P.."sessions" in step with its sorted set: scored by its head,
-- or gone once the session has nothing pending or in flight. Called where the head may change.
local function rehead(prefix, session)
  local head = redis.call('ZRANGE', prefix .. 's:' .. session, 0, 0)[1]
  if head then
    redis.call('ZADD', prefix .. 'sessions', head, session)
  else
    redis.call('ZREM', prefix .. 'sessions', session)
  end
end

-- Dead: kept and visible, out of the session's order and out of the depth, never delivered.
local function kill(prefix, mkey, id, session, reason)
  forget(prefix, mkey, id)
  redis.call('ZREM', prefix .. 's:' .. session, id)
  rehead(prefix, session)
  redis.call('HSET', mkey, 'status', 'dead', 'last_error', reason)
  redis.call('HDEL', mkey, 'token', 'lease_expires_at')
  signal(prefix, session)
end

-- Back to pending at its place (the head stays the head), with its claim voided.
local function requeue(prefix, mkey, id, available_at)
  redis.call('HSET', mkey, 'status', 'pending', 'available_at', int(available_at))
  redis.call('HDEL', mkey, 'token', 'lease_expires_at')
  redis.call('SREM', prefix .. 'inflight', id)
end


-- Claim the session's head if it is claimable: pending and due, or in flight under an expired
-- lease (a stalled consumer); a stalled head on its last attempt dies. The lease ends at the
-- server's clock plus lease_ms. Returns {id, attempt, token, lease_expires_at, kind,
-- tool_use_id, payload, original_timestamp, content_session, enqueued_at, consumer}, or nil
-- (and, as a second value, true when the head died: the session's next head may be claimable).
local function claim_head(prefix, session, consumer, lease_ms, max_attempts)
  local skey, wkey = prefix .. 's:' .. session, prefix .. 'w:' .. session
  local head = redis.call('ZRANGE', skey, 0, 0)[1]
  if not head then
    redis.call('DEL', wkey)  -- nothing to claim: stale wake tokens would only cause a spin
    return nil
  end
  local mkey = prefix .. 'm:' .. head
  local f = redis.call('HMGET', mkey, 'status', 'available_at', 'lease_expires_at', 'attempt')
  local now = now_ms()
  local attempt = tonumber(f[4])
  if f[1] == 'processing' then
    if tonumber(f[3]) > now then
      redis.call('DEL', wkey)
      return nil
    end
    if attempt >= max_attempts then
      kill(prefix, mkey, head, session, 'lease expired on the last attempt')
      return nil, true  -- kill() left a wake token, so the consumer claims the next head at once
    end
  elseif tonumber(f[2]) > now then
    redis.call('DEL', wkey)
    return nil
  end
  attempt = attempt + 1
  local token = int(redis.call('INCR', prefix .. 'tokens'))
  local lease = int(now + lease_ms)
  redis.call('HSET', mkey, 'status', 'processing', 'attempt', attempt, 'token', token,
    'lease_expires_at', lease, 'consumer', consumer)
  redis.call('SADD', prefix .. 'inflight', head)
  local m = redis.call('HMGET', mkey, 'kind', 'tool_use_id', 'original_timestamp',
    'content_session', 'enqueued_at')
  local payload = redis.call('GET', prefix .. 'p:' .. head)
  return {head, attempt, token, lease, m[1], m[2], payload, m[3], m[4], m[5], consumer}
end

-- Delete a message still held by the claim `token`. Returns its session and whether more of
-- the session remain, or nil when the claim no longer holds (re-claimed, reset, or gone).
local function ack(prefix, id, token)
  local mkey = prefix .. 'm:' .. id
  local f = redis.call('HMGET', mkey, 'status', 'token', 'session')
  if f[1] ~= 'processing' or f[2] ~= token then
    return nil
  end
  local skey = prefix .. 's:' .. f[3]
  forget(prefix, mkey, id)
  redis.call('ZREM', skey, id)
  redis.call('DEL', mkey, prefix .. 'p:' .. id)
  rehead(prefix, f[3])
  return f[3], redis.call('ZCARD', skey) > 0
end

-- Give back a head claimed under `token` but never handed to a consumer: pending again at its
-- place, its attempt restored, the session woken. Returns 1, or 0 when the claim no longer
-- holds.
local function unclaim(prefix, id, token)
  local mkey = prefix .. 'm:' .. id
  local f = redis.call('HMGET', mkey, 'status', 'token', 'session', 'attempt')
  if f[1] ~= 'processing' or f[2] ~= token then
    return 0
  end
  redis.call('HSET', mkey, 'status', 'pending', 'attempt', tonumber(f[4]) - 1)
  redis.call('HDEL', mkey, 'token', 'lease_expires_at', 'consumer')
  redis.call('SREM', prefix .. 'inflight', id)
  signal(prefix, f[3])
  return 1
end
