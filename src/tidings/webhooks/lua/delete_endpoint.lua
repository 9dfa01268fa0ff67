-- Delete an endpoint with its deliveries and their attempt logs.
-- KEYS[1] endpoints hash  KEYS[2] the endpoint's delivery zset  KEYS[3] pending zset
-- KEYS[4] due zset  KEYS[5] inflight zset  KEYS[6] owner hash  KEYS[7] next hash
-- then pairs KEYS[8+2i-2] delivery hash, KEYS[8+2i-1] attempt log;  ARGV[1] endpoint id,
-- ARGV[2..] delivery ids.  Returns 1 if the endpoint existed.
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
for i = 2, #ARGV do
  local id = ARGV[i]
  redis.call('DEL', KEYS[8 + 2 * (i - 2)], KEYS[9 + 2 * (i - 2)])
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
  redis.call('HDEL', KEYS[7], id)
end
redis.call('DEL', KEYS[2])
return existed
