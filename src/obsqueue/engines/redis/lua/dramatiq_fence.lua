-- fence: check that a claim still holds (its token is the gate's and its message is still in the
-- holder's acks set) and set its lease. ARGV[3] = token, ARGV[4] = "extend" (lease = now + ms) or
-- "pin" (lease = at least now + ms: an ack is under way), ARGV[5] = ms.
-- Returns {rid, lease, consumer} or nil (stale).
local token, mode, ms = ARGV[3], ARGV[4], tonumber(ARGV[5])
local gate = gate_key(QUEUE)
local g = hash_of(gate)
if g.token ~= token or g.rid == '' or redis.call('SISMEMBER', g.acks, g.rid) == 0 then return nil end
local lease = now_ms() + ms
if mode == 'pin' then lease = math.max(lease, tonumber(g.lease)) end
redis.call('HSET', gate, 'lease', int(lease))
return {g.rid, int(lease), g.consumer}
