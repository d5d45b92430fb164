-- requeue: a failed delivery with attempts left goes back to the *head* of its queue, due after
-- the backoff (Dramatiq's consumer.requeue would RPUSH it behind the session's later messages).
-- ARGV[3] = token, ARGV[4] = delay ms, ARGV[5] = last error. Returns 1, or nil (stale claim).
local token, delay, err = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local g = hash_of(gate_key(QUEUE))
if g.token ~= token or g.rid == '' or redis.call('SREM', g.acks, g.rid) == 0 then return nil end
if redis.call('HEXISTS', msgs_key(QUEUE), g.rid) == 1 then
  redis.call('LPUSH', list_key(QUEUE), g.rid)
end
if delay > 0 then redis.call('HSET', DUE, g.rid, int(now_ms() + delay)) end
redis.call('HSET', ERRORS, g.rid, err)
drop_gate(QUEUE)
return 1
