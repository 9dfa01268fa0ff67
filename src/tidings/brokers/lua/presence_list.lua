-- Drop expired presence leases, then return the live ones as {client id, JSON, ...}.
-- KEYS[1] hash   KEYS[2] zset of lease ends   ARGV[1] now (Unix ms)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  for _, client in ipairs(expired) do
    redis.call('HDEL', KEYS[1], client)
  end
end
return redis.call('HGETALL', KEYS[1])
