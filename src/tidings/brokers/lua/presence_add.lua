-- Record (or refresh) a client's presence lease in a channel.
-- KEYS[1] hash {tidings:<ch>}:presence (client id -> JSON)   KEYS[2] zset ...:presence:exp
-- ARGV[1] client id   ARGV[2] client JSON   ARGV[3] lease end (Unix ms)   ARGV[4] lease (ms)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
-- Both keys outlive their longest lease by a little, so an abandoned channel disappears.
local keep = tonumber(ARGV[4]) + 60000
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < keep then
    redis.call('PEXPIRE', key, keep)
  end
end
return 1
