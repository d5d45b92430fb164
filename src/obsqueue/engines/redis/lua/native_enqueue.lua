-- native_enqueue.lua: store one message, or return the queued one it duplicates.
-- KEYS: 1 ids, 2 session zset, 3 dedupe, 4 depth, 5 sessions zset
-- ARGV: 1 prefix, 2 session, 3 content_session, 4 kind, 5 tool_use_id ('' = none),
--       6 payload JSON, 7 original_timestamp (ms)
-- Returns {id, 1} for a duplicate of a pending or in-flight message, else {new id, 0}.
local prefix, session, csid, tuid = ARGV[1], ARGV[2], ARGV[3], ARGV[5]

local field = nil
if tuid ~= '' then
  field = dedupe_field(csid, tuid)
  local existing = redis.call('HGET', KEYS[3], field)
  if existing then
    local status = redis.call('HGET', prefix .. 'm:' .. existing, 'status')
    if status == 'pending' or status == 'processing' then
      return {tonumber(existing), 1}
    end
  end
end

local id = int(redis.call('INCR', KEYS[1]))
local mkey = prefix .. 'm:' .. id
redis.call('HSET', mkey,
  'session', session, 'content_session', csid, 'kind', ARGV[4],
  'original_timestamp', ARGV[7], 'enqueued_at', int(now_ms()),
  'status', 'pending', 'attempt', 0, 'available_at', 0)
redis.call('SET', prefix .. 'p:' .. id, ARGV[6])
if field then
  redis.call('HSET', mkey, 'tool_use_id', tuid)
  redis.call('HSET', KEYS[3], field, id)
end
redis.call('ZADD', KEYS[2], id, id)
redis.call('ZADD', KEYS[5], 'NX', id, session)  -- a new head only if the session was empty
redis.call('INCR', KEYS[4])
signal(prefix, session)
return {tonumber(id), 0}
