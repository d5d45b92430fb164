-- native_unclaim.lua: give back heads claimed (by native_ack_claim.lua or
-- native_claim_heads.lua) but never handed to a consumer: each returns to pending at its place,
-- its attempt restored, and its session is woken (unclaim, native_common.lua).
-- KEYS: the message hashes, one per id
-- ARGV: 1 prefix, then id, token pairs in the order of KEYS
-- Returns how many were given back (a claim that no longer holds is left alone).
local prefix = ARGV[1]
local given = 0
for i = 2, #ARGV, 2 do
  given = given + unclaim(prefix, ARGV[i], ARGV[i + 1])
end
return given
