-- release: after Dramatiq's consumer.ack / consumer.nack (or a fetch that got nothing), drop the
-- glue of the message and free the gate. ARGV[3] = token, ARGV[4] = rid ("" = nothing fetched),
-- ARGV[5] = "acked" or "dead", ARGV[6] = last error (dead only).
-- Returns 1 if Dramatiq's ack/nack took effect (the rid left the queue's messages), else 0: the
-- claim had been taken over between the fence and the ack, which then changed nothing.
local token, rid, outcome, err = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local effective = 0
if rid ~= '' and redis.call('HEXISTS', msgs_key(QUEUE), rid) == 0 then
  effective = 1
  release_dedupe(rid)
  redis.call('HDEL', DUE, rid)
  if outcome == 'dead' then
    redis.call('HSET', ERRORS, rid, err)
  else
    redis.call('HDEL', ATTEMPTS, rid)
    redis.call('HDEL', ERRORS, rid)
  end
end
if redis.call('HGET', gate_key(QUEUE), 'token') == token then drop_gate(QUEUE) end
return effective
