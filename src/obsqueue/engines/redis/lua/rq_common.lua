-- rq_common.lua: the rq family's helpers, prepended (after the shared lib.lua) to every
-- other rq_*.lua script when it is loaded. Not a script of its own.
--
-- ARGV[1..6] of every script is the key layout; the Python side takes each prefix from RQ's own
-- classes, so the keys below are exactly the ones RQ's Queue, Job and registries use.
--   RQ's keys (S = a session, Q = "obsq:<ns>:" .. S, the RQ queue's name):
--     ARGV[2] .. ARGV[3] .. id   "rq:job:<ns>-<id>"   the RQ job hash (Job.to_dict() fields);
--                                                     its 'status' is queued | started | failed
--     ARGV[4] .. S               "rq:queue:<Q>"       the RQ queue: pending job ids, FIFO
--     ARGV[5] .. S               "rq:wip:<Q>"         RQ's StartedJobRegistry: "<job id>:<token>"
--                                                     (RQ's job:execution composite key), score =
--                                                     lease end in epoch seconds (ms precision)
--     ARGV[6] .. S               "rq:failed:<Q>"      RQ's FailedJobRegistry: dead jobs, score +inf
--   obsqueue's glue (G = ARGV[1] = "obsq-rq:<ns>:"):
--     G.."ids", G.."tokens"      INCR counters: message ids, fencing tokens (= execution ids)
--     G.."m:"..id                hash: session, content_session, tool_use_id, attempt,
--                                available_at, consumer, last_error
--     G.."dedupe"                hash: (content_session_id, tool_use_id) -> id while queued/started
--     G.."depth"                 messages queued or started, all sessions
--     G.."inflight"              set of ids started (for a reset of every session)
--     G.."w:"..S                 wake list (at most one token) a blocked consumer BLPOPs

local GLUE, JOB, NS, QUEUE, WIP, FAILED = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local function job_id(id) return NS .. id end
local function job_key(id) return JOB .. NS .. id end
local function glue_key(id) return GLUE .. 'm:' .. id end

-- The message id inside an RQ job id "<ns>-<id>", or nil for a job obsqueue did not enqueue.
local function id_of(jid)
  if string.sub(jid, 1, #NS) ~= NS then return nil end
  return string.match(string.sub(jid, #NS + 1), '^%d+$')
end

-- A lease end as a StartedJobRegistry score (epoch seconds, as RQ scores it) and back.
local function score_of(ms)
  return string.format('%d.%03d', math.floor(ms / 1000), ms % 1000)
end
local function ms_of(score)
  return math.floor(tonumber(score) * 1000 + 0.5)
end

-- Nothing claimable: drop the session's wake token so an idle consumer does not spin.
local function idle(session)
  redis.call('DEL', GLUE .. 'w:' .. session)
  return nil
end

-- The message's claim, if `token` still holds it: its StartedJobRegistry entry and session.
local function held(id, token)
  local session = redis.call('HGET', glue_key(id), 'session')
  if not session then return nil end
  local member = job_id(id) .. ':' .. token
  if not redis.call('ZSCORE', WIP .. session, member) then return nil end
  return member, session
end

-- Dead: out of StartedJobRegistry into FailedJobRegistry (kept, score +inf like failure_ttl=-1),
-- status failed, never delivered; the next message becomes the head.
local function kill(id, session, member, reason)
  redis.call('ZREM', WIP .. session, member)
  forget(GLUE, glue_key(id), id)
  redis.call('HSET', job_key(id), 'status', 'failed')
  redis.call('ZADD', FAILED .. session, '+inf', job_id(id))
  redis.call('HSET', glue_key(id), 'last_error', reason)
  wake(GLUE, session)
end

-- Back to pending at its place: out of StartedJobRegistry, onto the front of its RQ queue (the
-- head stays the head), status queued, claim voided, due at `available_at`.
local function requeue(id, session, member, available_at)
  redis.call('ZREM', WIP .. session, member)
  redis.call('LPUSH', QUEUE .. session, job_id(id))
  redis.call('HSET', job_key(id), 'status', 'queued')
  redis.call('HSET', glue_key(id), 'available_at', int(available_at))
  redis.call('SREM', GLUE .. 'inflight', id)
  wake(GLUE, session)
end

