-- Give up the leases ARGV[2..] held by ARGV[1]: they are due again at their next attempt time.
-- KEYS[1] due zset  KEYS[2] inflight zset  KEYS[3] owner hash  KEYS[4] next hash
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[3], id) == ARGV[1] then
    redis.call('HDEL', KEYS[3], id)
    if redis.call('ZREM', KEYS[2], id) == 1 then
      local at = redis.call('HGET', KEYS[4], id)
      if at then
        redis.call('ZADD', KEYS[1], at, id)
      end
    end
  end
end
return 0
