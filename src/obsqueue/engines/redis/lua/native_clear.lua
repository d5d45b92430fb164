-- native_clear.lua: delete the session's pending messages (not the one in flight).
-- KEYS: 1 session zset
-- ARGV: 1 prefix, 2 session
-- O(messages in the session). Returns how many were deleted.
local prefix = ARGV[1]
local removed = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local mkey = prefix .. 'm:' .. id
  if redis.call('HGET', mkey, 'status') == 'pending' then
    forget(prefix, mkey, id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', mkey, prefix .. 'p:' .. id)
    removed = removed + 1
  end
end
if removed > 0 then
  rehead(prefix, ARGV[2])
end
return removed
