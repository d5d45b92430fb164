-- native_ack.lua: delete a message that is still held by the given claim.
-- KEYS: 1 message hash
-- ARGV: 1 prefix, 2 id, 3 token
-- Returns 1, or 0 when the claim no longer holds (the message was re-claimed, reset, or gone).
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
local mkey = KEYS[1]
local f = redis.call('HMGET', mkey, 'status', 'token', 'session')
if f[1] ~= 'processing' or f[2] ~= token then
  return 0
end
local skey = prefix .. 's:' .. f[3]
forget(prefix, mkey, id)
redis.call('ZREM', skey, id)
redis.call('DEL', mkey, prefix .. 'p:' .. id)
if redis.call('ZCARD', skey) > 0 then
  wake(prefix, f[3])  -- the next head is claimable now, maybe by a consumer in another process
end
return 1
