-- native_claim.lua: claim the session's head if it is claimable (claim_head, native_common.lua).
-- KEYS: 1 session zset, 2 tokens, 3 inflight (declared; the script builds the same names)
-- ARGV: 1 prefix, 2 session, 3 consumer id, 4 lease (ms), 5 max_attempts
-- Returns {id, attempt, token, lease_expires_at, kind, tool_use_id, payload,
--          original_timestamp, content_session, enqueued_at, consumer}, or nil.
return claim_head(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
