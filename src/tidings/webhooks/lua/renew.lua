-- Extend the leases ARGV[3..] held by ARGV[2] until ARGV[1]; return the ids not held any more.
-- KEYS[1] inflight zset  KEYS[2] owner hash
local lost = {}
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[2] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
