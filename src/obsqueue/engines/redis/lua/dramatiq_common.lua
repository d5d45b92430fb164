-- dramatiq_common.lua: the dramatiq family's helpers, prepended (after the shared lib.lua) to every
-- other dramatiq_*.lua script when it is loaded. Not a script of its own.
--
-- ARGV[1] = Dramatiq's broker namespace N, ARGV[2] = a Dramatiq queue name Q (or "").
-- Dramatiq's keys, as its dispatch.lua writes them (obsqueue reads and moves, never re-encodes):
--   N:Q              list of redis message ids (rid), the queue, FIFO
--   N:Q.msgs         hash rid -> encoded Dramatiq message (pending and in flight)
--   N:Q.XQ, .XQ.msgs Dramatiq's dead-letter zset and hash (what consumer.nack writes)
--   N:__acks__.<broker id>.Q   set of rids a broker fetched and has not acked: in flight
-- obsqueue's glue, under G = N:__obsq__: (queue names start with s_ or x_, so no clash):
--   G.."ids", G.."tokens"   INCR counters: message ids, fencing tokens
--   G.."gate:"..Q           hash: token, acks (holder's acks key), rid ("" while claiming),
--                           head (the rid the gate was taken for), kill, lease (ms), consumer
--   G.."gates", G.."queues" sets of queue names with a gate / ever enqueued to
--   G.."attempts", G.."errors", G.."due"   hashes keyed by rid: deliveries, last error, not-before
--   G.."dedupe"             hash field -> "id|reserved_until|queue|rid" (rid "" while reserved)
--   G.."dkeys"              hash rid -> dedupe field (to release it)

local NS, QUEUE = ARGV[1], ARGV[2]
local G = NS .. ':__obsq__:'
local IDS, TOKENS, GATES, QUEUES = G .. 'ids', G .. 'tokens', G .. 'gates', G .. 'queues'
local ATTEMPTS, ERRORS, DUE = G .. 'attempts', G .. 'errors', G .. 'due'
local DEDUPE, DKEYS = G .. 'dedupe', G .. 'dkeys'

local function list_key(q) return NS .. ':' .. q end
local function msgs_key(q) return NS .. ':' .. q .. '.msgs' end
local function gate_key(q) return G .. 'gate:' .. q end

local function split(entry)
  local id, until_ms, q, rid = string.match(entry, '^(%d+)|(%d+)|([^|]*)|(.*)$')
  return id, tonumber(until_ms), q, rid
end

-- Free the dedupe key of a message that is no longer pending or in flight.
local function release_dedupe(rid)
  local field = redis.call('HGET', DKEYS, rid)
  if not field then return end
  redis.call('HDEL', DKEYS, rid)
  local entry = redis.call('HGET', DEDUPE, field)
  if entry then
    local _, _, _, held = split(entry)
    if held == rid then redis.call('HDEL', DEDUPE, field) end
  end
end

local function drop_gate(q)
  redis.call('DEL', gate_key(q))
  redis.call('SREM', GATES, q)
end
