-- reserve: the glue half of an enqueue, before Dramatiq's own enqueue script runs.
-- ARGV[3] = dedupe field ("" = no tool_use_id), ARGV[4] = how long a reservation holds (ms).
-- Returns {id, "new"}, {existing id, "dup"} or {reserving id, "wait"} (another enqueue of the
-- same key is between its reservation and its confirmation: ask again shortly).
local field, hold_ms = ARGV[3], tonumber(ARGV[4])
local now = now_ms()
if field ~= '' then
  local entry = redis.call('HGET', DEDUPE, field)
  if entry then
    local id, until_ms, q, rid = split(entry)
    if rid ~= '' then
      if redis.call('HEXISTS', msgs_key(q), rid) == 1 then return {id, 'dup'} end
      redis.call('HDEL', DKEYS, rid)  -- processed, dead or cleared without release: stale
    elseif until_ms > now then
      return {id, 'wait'}
    end
  end
end
local id = redis.call('INCR', IDS)
if field ~= '' then
  redis.call('HSET', DEDUPE, field, int(id) .. '|' .. int(now + hold_ms) .. '|' .. QUEUE .. '|')
end
redis.call('SADD', QUEUES, QUEUE)
return {id, 'new'}
