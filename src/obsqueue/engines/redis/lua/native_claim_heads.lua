-- native_claim_heads.lua: claim the claimable heads of up to `limit` distinct sessions in one
-- call, each exactly as native_claim.lua claims one (claim_head, native_common.lua): due, or
-- stalled past its lease (attempt + 1, a new token); a stalled head on its last attempt dies
-- and the session's next head is tried in its place.
-- KEYS: 1 tokens, 2 inflight, 3 sessions zset, 4 the every-session wake list, then (with
--       sessions given) each session's zset, in ARGV's order (declared; the script builds the
--       same names)
-- ARGV: 1 prefix, 2 consumer id, 3 lease (ms), 4 max_attempts, 5 limit, then the sessions to
--       try in order; none given: every session with work, oldest head first
-- Returns the claims, each as native_claim.lua returns one, followed by its session.
local prefix, consumer = ARGV[1], ARGV[2]
local lease_ms, max_attempts, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local claimed = {}

local function try(session)
  local msg, died = claim_head(prefix, session, consumer, lease_ms, max_attempts)
  while died do
    msg, died = claim_head(prefix, session, consumer, lease_ms, max_attempts)
  end
  if msg then
    msg[#msg + 1] = session
    claimed[#claimed + 1] = msg
  end
  return #claimed >= limit
end

if #ARGV > 5 then
  for i = 6, #ARGV do
    if try(ARGV[i]) then return claimed end
  end
  return claimed
end

-- Every session, in pages of the sessions zset by head id: the cursor is the last score seen,
-- so a session whose head died (rescored later, or gone) shifts no other session out of a page.
local CHUNK, after = 64, '-inf'
while true do
  local page = redis.call('ZRANGEBYSCORE', KEYS[3], after, '+inf', 'WITHSCORES', 'LIMIT', 0, CHUNK)
  for i = 1, #page, 2 do
    if try(page[i]) then return claimed end
  end
  if #page < 2 * CHUNK then break end
  after = '(' .. page[#page]
end
-- Every session was tried and no more is claimable: the tokens left for consumers of every
-- session are stale (a later wake leaves a new one).
redis.call('DEL', KEYS[4])
return claimed
