-- reset: startup recovery. Every message in flight (of queue ARGV[2], or of all queues when it
-- is "") goes back to the head of its queue, due now; its gate (and so its claim) is voided.
-- Returns how many messages moved.
local queues = {QUEUE}
if QUEUE == '' then queues = redis.call('SMEMBERS', GATES) end
local moved = 0
for _, q in ipairs(queues) do
  local g = hash_of(gate_key(q))
  if g.token then
    for _, rid in ipairs(redis.call('SMEMBERS', g.acks)) do
      redis.call('SREM', g.acks, rid)
      if redis.call('HEXISTS', msgs_key(q), rid) == 1 then
        redis.call('LPUSH', list_key(q), rid)
        redis.call('HDEL', DUE, rid)
        moved = moved + 1
      end
    end
    drop_gate(q)
  end
end
return moved
