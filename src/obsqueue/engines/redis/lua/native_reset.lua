-- native_reset.lua: startup recovery; in-flight messages back to pending, claims voided.
-- KEYS: 1 inflight set, 2 session zset (only read when ARGV[2] is '1')
-- ARGV: 1 prefix, 2 '1' = only the session of KEYS[2], '0' = every session
-- Only a session's head can be in flight, so one session costs O(1); all sessions cost
-- O(messages in flight). Returns how many messages moved.
local prefix = ARGV[1]
local candidates
if ARGV[2] == '1' then
  candidates = redis.call('ZRANGE', KEYS[2], 0, 0)
else
  candidates = redis.call('SMEMBERS', KEYS[1])
end
local moved = 0
for _, id in ipairs(candidates) do
  local mkey = prefix .. 'm:' .. id
  local f = redis.call('HMGET', mkey, 'status', 'session')
  if f[1] == 'processing' then
    requeue(prefix, mkey, id, 0)
    signal(prefix, f[2])
    moved = moved + 1
  end
end
return moved
