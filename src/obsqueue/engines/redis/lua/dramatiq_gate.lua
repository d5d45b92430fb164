-- gate: the first step of a claim. Takes the session's gate if no message of it is in flight
-- and its head is due; a gate whose lease ran out is taken over (stall recovery): whatever its
-- holder fetched goes back to the head of the queue, marked to be killed when out of attempts.
-- ARGV[3] = this broker's acks key for the queue, ARGV[4] = lease ms, ARGV[5] = max attempts,
-- ARGV[6] = consumer id. Returns {"go", token}, {"busy"}, {"empty"} or {"later", due_ms}.
local acks, lease_ms, max_attempts, consumer = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local gate, list, msgs = gate_key(QUEUE), list_key(QUEUE), msgs_key(QUEUE)
local now = now_ms()
local g = hash_of(gate)
local kill = ''
if g.token then
  local holding = g.rid == '' or redis.call('SISMEMBER', g.acks, g.rid) == 1
  if holding and tonumber(g.lease) > now then return {'busy'} end
  if holding then
    for _, rid in ipairs(redis.call('SMEMBERS', g.acks)) do
      redis.call('SREM', g.acks, rid)
      if redis.call('HEXISTS', msgs, rid) == 1 then
        redis.call('LPUSH', list, rid)
        if tonumber(redis.call('HGET', ATTEMPTS, rid) or '0') >= max_attempts then kill = rid end
      end
    end
  end
  drop_gate(QUEUE)
end
local head = redis.call('LINDEX', list, 0)
if not head then return {'empty'} end
local due = tonumber(redis.call('HGET', DUE, head) or '0')
if due > now and head ~= kill then return {'later', int(due)} end
local token = redis.call('INCR', TOKENS)
redis.call('HSET', gate, 'token', token, 'acks', acks, 'rid', '', 'head', head, 'kill', kill,
  'lease', int(now + lease_ms), 'consumer', consumer)
redis.call('SADD', GATES, QUEUE)
return {'go', token}
