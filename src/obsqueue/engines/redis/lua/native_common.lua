-- native_common.lua: the native family's helpers, prepended (after the shared lib.lua) to every
-- other native_*.lua script when it is loaded. Not a script of its own.
--
-- Layout (P = the key prefix "{namespace}:", hash-tagged so a cluster keeps it in one slot):
--   P.."ids"        INCR counter of message ids (never reused)
--   P.."tokens"     INCR counter of fencing tokens (never reused)
--   P.."depth"      messages pending or in flight, all sessions (kept by these scripts)
--   P.."dedupe"     hash: dedupe field -> id, held while the message is pending or in flight
--   P.."inflight"   set of ids in flight (status processing)
--   P.."m:"..id     hash: one message's fields (status pending | processing | dead)
--   P.."p:"..id     string: its payload (JSON text), apart so the hash stays a small listpack
--   P.."s:"..sess   sorted set of the session's not-dead ids, score = id (head = lowest)
--   P.."w:"..sess   list of wake tokens (at most one) a blocked consumer BLPOPs

-- Dead: kept and visible, out of the session's order and out of the depth, never delivered.
local function kill(prefix, mkey, id, session, reason)
  forget(prefix, mkey, id)
  redis.call('ZREM', prefix .. 's:' .. session, id)
  redis.call('HSET', mkey, 'status', 'dead', 'last_error', reason)
  redis.call('HDEL', mkey, 'token', 'lease_expires_at')
  wake(prefix, session)
end

-- Back to pending at its place (the head stays the head), with its claim voided.
local function requeue(prefix, mkey, id, available_at)
  redis.call('HSET', mkey, 'status', 'pending', 'available_at', int(available_at))
  redis.call('HDEL', mkey, 'token', 'lease_expires_at')
  redis.call('SREM', prefix .. 'inflight', id)
end

