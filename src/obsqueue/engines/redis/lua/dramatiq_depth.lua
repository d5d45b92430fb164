-- depth: messages pending or in flight over every queue (Dramatiq keeps both in Q.msgs).
local total = 0
for _, q in ipairs(redis.call('SMEMBERS', QUEUES)) do
  total = total + redis.call('HLEN', msgs_key(q))
end
return total
