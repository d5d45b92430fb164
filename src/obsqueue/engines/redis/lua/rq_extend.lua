-- rq_extend.lua: push the lease's end (the StartedJobRegistry score) out if the claim holds.
-- ARGV: 1-6 layout, 7 id, 8 token, 9 lease (ms)
-- Returns {lease_expires_at (ms), consumer}, or nil when the claim no longer holds.
local id, token = ARGV[7], ARGV[8]
local member, session = held(id, token)
if not member then
  return nil
end
local lease = now_ms() + tonumber(ARGV[9])
redis.call('ZADD', WIP .. session, 'XX', score_of(lease), member)
return {lease, redis.call('HGET', glue_key(id), 'consumer')}
