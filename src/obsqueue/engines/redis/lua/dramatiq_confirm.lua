-- confirm: after Dramatiq's enqueue returned, tie the reserved dedupe key to the message's rid.
-- ARGV[3] = dedupe field, ARGV[4] = id, ARGV[5] = rid. Returns 1, or 0 if the reservation had
-- expired and was taken over (the message is queued, but its key is not held).
local field, id, rid = ARGV[3], ARGV[4], ARGV[5]
local entry = redis.call('HGET', DEDUPE, field)
if not entry or string.sub(entry, 1, #id + 1) ~= id .. '|' then return 0 end
redis.call('HSET', DEDUPE, field, id .. '|0|' .. QUEUE .. '|' .. rid)
redis.call('HSET', DKEYS, rid, field)
return 1
