-- Release the leases that ended (their deliveries become due again at their next attempt time),
-- then claim up to ARGV[4] due deliveries for ARGV[3] until ARGV[2].
-- KEYS[1] due zset (by due time)  KEYS[2] inflight zset (by lease end)  KEYS[3] owner hash
-- KEYS[4] next hash (delivery id -> next attempt time)   ARGV[1] now
-- Returns the claimed delivery ids, earliest due first.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  local at = redis.call('HGET', KEYS[4], id) or ARGV[1]
  redis.call('ZADD', KEYS[1], at, id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  redis.call('HSET', KEYS[3], id, ARGV[3])
end
return ids
