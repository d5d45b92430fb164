-- rq_fail.lua: give a message back under the given claim.
-- ARGV: 1-6 layout, 7 id, 8 token, 9 reason, 10 retry ('1' or '0'), 11 retry delay (ms),
--       12 max_attempts
-- With retry and attempts left: back at the front of its RQ queue, due after the delay.
-- Otherwise dead (FailedJobRegistry). Returns 1 (re-queued), 2 (dead), or 0 (claim gone).
local id, token, reason = ARGV[7], ARGV[8], ARGV[9]
local member, session = held(id, token)
if not member then
  return 0
end
local attempt = tonumber(redis.call('HGET', glue_key(id), 'attempt'))
if ARGV[10] ~= '1' or attempt >= tonumber(ARGV[12]) then
  kill(id, session, member, reason)
  return 2
end
requeue(id, session, member, now_ms() + tonumber(ARGV[11]))
redis.call('HSET', glue_key(id), 'last_error', reason)
return 1
