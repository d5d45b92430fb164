-- native_claim.lua: claim the session's head if it is claimable.
-- KEYS: 1 session zset, 2 tokens, 3 inflight
-- ARGV: 1 prefix, 2 session, 3 consumer id, 4 lease (ms), 5 max_attempts
-- The head is the session's lowest not-dead id. It is claimed when pending and due, or when in
-- flight under an expired lease (a stalled consumer); a stalled head on its last attempt dies.
-- Returns {id, attempt, token, lease_expires_at, kind, tool_use_id, payload,
--          original_timestamp, content_session, enqueued_at, consumer}, or nil.
local prefix, session, consumer = ARGV[1], ARGV[2], ARGV[3]
local lease_ms, max_attempts = tonumber(ARGV[4]), tonumber(ARGV[5])
local wkey = prefix .. 'w:' .. session

local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
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
    return nil  -- kill() left a wake token, so the consumer claims the next head at once
  end
elseif tonumber(f[2]) > now then
  redis.call('DEL', wkey)
  return nil
end

attempt = attempt + 1
local token = int(redis.call('INCR', KEYS[2]))
local lease = int(now + lease_ms)
redis.call('HSET', mkey, 'status', 'processing', 'attempt', attempt, 'token', token,
  'lease_expires_at', lease, 'consumer', consumer)
redis.call('SADD', KEYS[3], head)
local m = redis.call('HMGET', mkey, 'kind', 'tool_use_id', 'original_timestamp',
  'content_session', 'enqueued_at')
local payload = redis.call('GET', prefix .. 'p:' .. head)
return {head, attempt, token, lease, m[1], m[2], payload, m[3], m[4], m[5], consumer}
