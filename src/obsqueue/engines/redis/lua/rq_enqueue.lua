-- rq_enqueue.lua: store one RQ job under a new id and push it onto its session's RQ queue, or
-- return the queued/started message it duplicates.
-- KEYS: 1 the session's RQ queue, 2 RQ's set of queue keys (rq:queues)
-- ARGV: 1-6 layout, 7 session, 8 content_session, 9 tool_use_id ('' = none),
--       10.. the RQ job hash as field/value pairs (RQ's Job.to_dict(); saved the way RQ's own
--       unique-enqueue script saves them, but under the id allocated here)
-- Allocating the id, saving the job and pushing it happen in one step, so ids follow queue order.
-- Returns {id, 1} for a duplicate, else {new id, 0}.
local session, csid, tuid = ARGV[7], ARGV[8], ARGV[9]

local field = nil
if tuid ~= '' then
  field = dedupe_field(csid, tuid)
  local existing = redis.call('HGET', GLUE .. 'dedupe', field)
  if existing then
    local status = redis.call('HGET', job_key(existing), 'status')
    if status == 'queued' or status == 'started' then
      return {tonumber(existing), 1}
    end
  end
end

local id = int(redis.call('INCR', GLUE .. 'ids'))
redis.call('HSET', job_key(id), unpack(ARGV, 10))
redis.call('RPUSH', KEYS[1], job_id(id))
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('HSET', glue_key(id), 'session', session, 'content_session', csid,
  'attempt', 0, 'available_at', 0)
if field then
  redis.call('HSET', glue_key(id), 'tool_use_id', tuid)
  redis.call('HSET', GLUE .. 'dedupe', field, id)
end
redis.call('INCR', GLUE .. 'depth')
wake(GLUE, session)
return {tonumber(id), 0}
