-- Make deliveries pending again, due now, claimed by the caller; attempts restart.
-- KEYS[1] pending zset  KEYS[2] due zset  KEYS[3] inflight zset  KEYS[4] owner hash
-- KEYS[5] next hash  then KEYS[6..] delivery hashes
-- ARGV[1] now  ARGV[2] lease end  ARGV[3] owner token  then ARGV[4..] the delivery ids
-- Returns the seq of each delivery (0 for one that no longer exists).
local out = {}
for i = 6, #KEYS do
  local id = ARGV[i - 2]
  local seq = redis.call('HGET', KEYS[i], 'seq')
  if seq then
    redis.call('HSET', KEYS[i], 'status', 'pending', 'attempts', 0, 'next_attempt_at', ARGV[1],
               'updated_at', ARGV[1])
    redis.call('ZADD', KEYS[1], seq, id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[3], ARGV[2], id)
    redis.call('HSET', KEYS[4], id, ARGV[3])
    redis.call('HSET', KEYS[5], id, ARGV[1])
    out[#out + 1] = tonumber(seq)
  else
    out[#out + 1] = 0
  end
end
return out
