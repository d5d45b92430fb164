-- claimed: the last step of a claim, after Dramatiq's consumer fetched rid into this broker's
-- acks set. ARGV[3] = token, ARGV[4] = rid, ARGV[5] = this broker's acks key.
-- Returns {attempt, lease_ms} (delivered), {"kill"} (out of attempts: nack it), or nil when the
-- claim was voided meanwhile (reset, or taken over) or the fetch got another message than the
-- gate was taken for: then the message goes back to the head, undelivered.
local token, rid, acks = ARGV[3], ARGV[4], ARGV[5]
local gate = gate_key(QUEUE)
local g = hash_of(gate)
if g.token ~= token or g.head ~= rid or redis.call('SISMEMBER', acks, rid) == 0 then
  if redis.call('SREM', acks, rid) == 1 and redis.call('HEXISTS', msgs_key(QUEUE), rid) == 1 then
    redis.call('LPUSH', list_key(QUEUE), rid)
  end
  if g.token == token then drop_gate(QUEUE) end
  return nil
end
redis.call('HSET', gate, 'rid', rid)
if g.kill == rid then return {'kill'} end
local attempt = redis.call('HINCRBY', ATTEMPTS, rid, 1)
redis.call('HDEL', DUE, rid)
return {attempt, g.lease}
