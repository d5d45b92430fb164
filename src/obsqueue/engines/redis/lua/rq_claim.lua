-- rq_claim.lua: claim the session's head if it is claimable.
-- KEYS: 1 the session's RQ queue, 2 its StartedJobRegistry
-- ARGV: 1-6 layout, 7 session, 8 consumer id, 9 lease (ms), 10 max_attempts
-- The gate: while the session's StartedJobRegistry holds a job, nothing is popped from its queue,
-- so one message per session is in flight (P2). That job is the head: claimed again once its
-- lease ran out (attempt + 1, new token), or moved to FailedJobRegistry on its last attempt.
-- Otherwise the queue's first job is popped (LPOP, as RQ's Queue.pop_job_id does) when due.
-- Returns {id, attempt, token, lease_expires_at (ms)}, or nil.
local session, consumer = ARGV[7], ARGV[8]
local lease_ms, max_attempts = tonumber(ARGV[9]), tonumber(ARGV[10])
local now = now_ms()
local id

local started = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if started[1] then
  id = id_of(string.match(started[1], '^(.*):') or '')
  if not id or ms_of(started[2]) > now then
    return idle(session)  -- held; an entry obsqueue did not write is left to RQ's own cleanup
  end
  if tonumber(redis.call('HGET', glue_key(id), 'attempt')) >= max_attempts then
    kill(id, session, started[1], 'lease expired on the last attempt')
    return nil  -- kill() left a wake token, so the consumer claims the next head at once
  end
  redis.call('ZREM', KEYS[2], started[1])
else
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then
    return idle(session)
  end
  id = id_of(head)
  local due = id and redis.call('HGET', glue_key(id), 'available_at')
  if not due then
    -- A job obsqueue did not enqueue (pushed with RQ directly): set it aside, visibly.
    redis.call('LPOP', KEYS[1])
    redis.call('ZADD', FAILED .. session, '+inf', head)
    wake(GLUE, session)
    return nil
  end
  if tonumber(due) > now then
    return idle(session)
  end
  redis.call('LPOP', KEYS[1])
end

local attempt = redis.call('HINCRBY', glue_key(id), 'attempt', 1)
local token = redis.call('INCR', GLUE .. 'tokens')
local lease = now + lease_ms
redis.call('ZADD', KEYS[2], score_of(lease), job_id(id) .. ':' .. token)
redis.call('HSET', job_key(id), 'status', 'started')
redis.call('HSET', glue_key(id), 'consumer', consumer)
redis.call('SADD', GLUE .. 'inflight', id)
return {tonumber(id), attempt, token, lease}
