-- rq_reset.lua: startup recovery; started jobs back to the front of their queues, claims voided.
-- ARGV: 1-6 layout, 7 session, or '' for every session
-- One session costs O(1) (only its head can be started); all cost O(messages in flight).
-- Returns how many messages moved.
local sessions = {}
if ARGV[7] ~= '' then
  sessions[1] = ARGV[7]
else
  for _, id in ipairs(redis.call('SMEMBERS', GLUE .. 'inflight')) do
    sessions[#sessions + 1] = redis.call('HGET', glue_key(id), 'session')
  end
end
local moved = 0
for _, session in ipairs(sessions) do
  for _, member in ipairs(redis.call('ZRANGE', WIP .. session, 0, -1)) do
    local id = id_of(string.match(member, '^(.*):') or '')
    if id then
      requeue(id, session, member, 0)
      moved = moved + 1
    end
  end
end
return moved
