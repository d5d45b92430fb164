-- native_fail.lua: give a message back under the given claim.
-- KEYS: 1 message hash
-- ARGV: 1 prefix, 2 id, 3 token, 4 reason, 5 retry ('1' or '0'), 6 retry delay (ms),
--       7 max_attempts
-- With retry and attempts left: pending again at its place, due after the delay. Otherwise dead.
-- Returns 1 (re-queued), 2 (dead), or 0 when the claim no longer holds.
local prefix, id, token, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local mkey = KEYS[1]
local f = redis.call('HMGET', mkey, 'status', 'token', 'session', 'attempt')
if f[1] ~= 'processing' or f[2] ~= token then
  return 0
end
if ARGV[5] ~= '1' or tonumber(f[4]) >= tonumber(ARGV[7]) then
  kill(prefix, mkey, id, f[3], reason)
  return 2
end
requeue(prefix, mkey, id, now_ms() + tonumber(ARGV[6]))
redis.call('HSET', mkey, 'last_error', reason)
signal(prefix, f[3])
return 1
