-- native_extend.lua: push the lease's end out if the claim still holds.
-- KEYS: 1 message hash
-- ARGV: 1 token, 2 lease (ms)
-- Returns {lease_expires_at, consumer}, or nil when the claim no longer holds.
local f = redis.call('HMGET', KEYS[1], 'status', 'token', 'consumer')
if f[1] ~= 'processing' or f[2] ~= ARGV[1] then
  return nil
end
local lease = int(now_ms() + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'lease_expires_at', lease)
return {lease, f[3]}
