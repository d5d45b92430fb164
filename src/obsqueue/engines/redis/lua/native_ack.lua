-- native_ack.lua: delete a message that is still held by the given claim.
-- KEYS: 1 message hash
-- ARGV: 1 prefix, 2 id, 3 token
-- Returns 1, or 0 when the claim no longer holds (the message was re-claimed, reset, or gone).
local prefix = ARGV[1]
local session, more = ack(prefix, ARGV[2], ARGV[3])
if not session then
  return 0
end
if more then
  signal(prefix, session)  -- the next head is claimable now, maybe by a consumer in another process
end
return 1
