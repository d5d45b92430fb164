-- rq_ack.lua: the message is processed: delete its RQ job (as RQ does for result_ttl=0) if the
-- given claim still holds it.
-- ARGV: 1-6 layout, 7 id, 8 token
-- Returns 1, or 0 when the claim no longer holds (re-claimed after its lease, reset, or gone).
local id, token = ARGV[7], ARGV[8]
local member, session = held(id, token)
if not member then
  return 0
end
redis.call('ZREM', WIP .. session, member)
forget(GLUE, glue_key(id), id)
redis.call('DEL', job_key(id), glue_key(id))
if redis.call('LLEN', QUEUE .. session) > 0 then
  wake(GLUE, session)  -- the next head is claimable now, maybe by a consumer in another process
end
return 1
