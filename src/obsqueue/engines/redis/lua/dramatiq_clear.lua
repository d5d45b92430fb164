-- clear: delete the pending messages of queue ARGV[2] (those in its list; in-flight ones are in
-- an acks set, dead ones in the dead-letter queue). Dramatiq's flush would drop all three.
-- Returns how many were deleted.
local list, msgs = list_key(QUEUE), msgs_key(QUEUE)
local rids = redis.call('LRANGE', list, 0, -1)
for _, rid in ipairs(rids) do
  redis.call('HDEL', msgs, rid)
  release_dedupe(rid)
  redis.call('HDEL', DUE, rid)
  redis.call('HDEL', ATTEMPTS, rid)
  redis.call('HDEL', ERRORS, rid)
end
redis.call('DEL', list)
return #rids
