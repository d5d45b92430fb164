-- native_common.lua: helpers prepended to every other native_*.lua script when it is loaded
-- (Lua scripts cannot include one another). Not a script of its own.
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

local WAKE_TTL_MS = 60000

-- Server time in epoch milliseconds: every client agrees on leases. TIME before writes is
-- allowed because scripts are replicated (and written to the AOF) by their effects.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as decimal text, never in exponent notation.
local function int(n)
  return string.format('%d', n)
end

-- Length-prefixed, so no (content_session_id, tool_use_id) pair can collide with another.
local function dedupe_field(csid, tuid)
  return #csid .. ':' .. csid .. tuid
end

-- Leave one wake token for a consumer blocked on the session (a hint, so capped and expiring).
local function wake(prefix, session)
  local wkey = prefix .. 'w:' .. session
  redis.call('LPUSH', wkey, '1')
  redis.call('LTRIM', wkey, 0, 0)
  redis.call('PEXPIRE', wkey, WAKE_TTL_MS)
end

-- The message leaves the queue (acked, dead or cleared): release its dedupe key, count it out.
local function forget(prefix, mkey, id)
  local f = redis.call('HMGET', mkey, 'content_session', 'tool_use_id')
  if f[2] then
    local dkey, field = prefix .. 'dedupe', dedupe_field(f[1], f[2])
    if redis.call('HGET', dkey, field) == id then
      redis.call('HDEL', dkey, field)
    end
  end
  if redis.call('DECR', prefix .. 'depth') < 0 then
    redis.call('SET', prefix .. 'depth', 0)
  end
  redis.call('SREM', prefix .. 'inflight', id)
end

-- Dead: kept and visible, out of the session's order and out of the depth, never delivered.
local function kill(prefix, mkey, id, session, reason)
  forget(prefix, mkey, id)
  redis.call('ZREM', prefix .. 's:' .. session, id)
  redis.call('HSET', mkey, 'status', 'dead', 'last_error', reason)
  redis.call('HDEL', mkey, 'token', 'lease_expires_at')
  wake(prefix, session)
end

-- Back to pending at its place (the head stays the head), with its claim voided.
local function requeue(prefix, mkey, id, available_at)
  redis.call('HSET', mkey, 'status', 'pending', 'available_at', int(available_at))
  redis.call('HDEL', mkey, 'token', 'lease_expires_at')
  redis.call('SREM', prefix .. 'inflight', id)
end

