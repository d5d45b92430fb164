-- lib.lua: the helpers every Redis script family shares (native_, rq_, dramatiq_), prepended to
-- each script before its family's <family>_common.lua when it is loaded (Lua scripts cannot
-- include one another). Not a script of its own; no family keeps a copy of these.

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
-- The Lua copy of obsqueue.engines.types.dedupe_field: the two must agree.
local function dedupe_field(csid, tuid)
  return #csid .. ':' .. csid .. tuid
end

-- A hash as a Lua table.
local function hash_of(key)
  local flat = redis.call('HGETALL', key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Leave one wake token for a consumer blocked on the session (a hint, so capped and expiring):
-- the list prefix .. 'w:' .. session, which the Python side BLPOPs.
local function wake(prefix, session)
  local wkey = prefix .. 'w:' .. session
  redis.call('LPUSH', wkey, '1')
  redis.call('LTRIM', wkey, 0, 0)
  redis.call('PEXPIRE', wkey, WAKE_TTL_MS)
end

-- The message leaves the queue (acked, dead or cleared): release its dedupe key (in the hash
-- prefix .. 'dedupe', if it still names this id), count it out of prefix .. 'depth', and drop
-- it from prefix .. 'inflight'. `mkey` is the hash holding its content_session and tool_use_id.
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
