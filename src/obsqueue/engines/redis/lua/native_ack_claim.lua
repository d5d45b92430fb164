-- native_ack_claim.lua: acknowledge a message and claim its session's next head, atomically
-- (one round trip, one AOF write). Nothing is claimed when the claim no longer holds.
-- KEYS: 1 message hash, 2 session zset, 3 tokens, 4 inflight
-- ARGV: 1 prefix, 2 id, 3 token, 4 session, 5 consumer id, 6 lease (ms), 7 max_attempts
-- Returns {0} when the claim no longer holds, {1} when acked and nothing was claimable, else
-- {1, <the claim_head reply>...}.
local prefix, session = ARGV[1], ARGV[4]
local acked, more = ack(prefix, ARGV[2], ARGV[3])
if not acked then
  return {0}
end
if not more then
  redis.call('DEL', prefix .. 'w:' .. session)
  return {1}
end
local nxt = claim_head(prefix, session, ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]))
if not nxt then
  return {1}
end
-- as an ack does: the iterator the head is handed to may be blocked on the wake list (an ack
-- from another thread)
signal(prefix, session)
local reply = {1}
for i = 1, #nxt do reply[i + 1] = nxt[i] end
return reply
