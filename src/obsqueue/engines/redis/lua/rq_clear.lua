-- rq_clear.lua: delete the session's pending messages: its RQ queue and their jobs (as RQ's
-- Queue.empty() does), with their glue. The message in flight stays.
-- KEYS: 1 the session's RQ queue
-- ARGV: 1-6 layout, 7 session
-- O(messages in the session). Returns how many were deleted.
local removed = 0
for _, jid in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local id = id_of(jid)
  if id and redis.call('EXISTS', glue_key(id)) == 1 then
    forget(GLUE, glue_key(id), id)
    redis.call('DEL', job_key(id), glue_key(id))
    removed = removed + 1
  else
    redis.call('ZADD', FAILED .. ARGV[7], '+inf', jid)  -- not obsqueue's: set aside, visibly
  end
end
redis.call('DEL', KEYS[1])
return removed
