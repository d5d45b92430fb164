-- native_unclaim.lua: give back a head claimed by native_ack_claim.lua but never handed to the
-- consumer: it returns to pending at its place, its attempt restored, and the session is woken.
-- KEYS: 1 message hash
-- ARGV: 1 prefix, 2 id, 3 token
-- Returns 1, or 0 when the claim no longer holds.
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
local mkey = KEYS[1]
local f = redis.call('HMGET', mkey, 'status', 'token', 'session', 'attempt')
if f[1] ~= 'processing' or f[2] ~= token then
  return 0
end
redis.call('HSET', mkey, 'status', 'pending', 'attempt', tonumber(f[4]) - 1)
redis.call('HDEL', mkey, 'token', 'lease_expires_at', 'consumer')
redis.call('SREM', prefix .. 'inflight', id)
wake(prefix, f[3])
return 1
