-- Log an attempt and move the delivery; on 'pending' the caller keeps its lease (unless
-- another node holds the delivery now).
-- KEYS[1] delivery hash  KEYS[2] attempt log list  KEYS[3] pending zset  KEYS[4] due zset
-- KEYS[5] inflight zset  KEYS[6] owner hash  KEYS[7] next hash  KEYS[8] endpoints hash
-- ARGV[1] attempt JSON  ARGV[2] status  ARGV[3] next attempt at ('' none)  ARGV[4] updated_at
-- ARGV[5] last status ('' none)  ARGV[6] last error ('' none)  ARGV[7] lease end
-- ARGV[8] owner token  ARGV[9] endpoint id  ARGV[10] endpoint doc ('' unchanged)
-- Returns 0 if the delivery no longer exists (its endpoint was deleted), else 1.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local id = string.match(KEYS[1], ':dlv:(.*)$')
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[4])
local optional = {next_attempt_at = ARGV[3], last_status = ARGV[5], last_error = ARGV[6]}
for field, value in pairs(optional) do
  if value == '' then
    redis.call('HDEL', KEYS[1], field)
  else
    redis.call('HSET', KEYS[1], field, value)
  end
end
if ARGV[2] == 'pending' then
  redis.call('HSET', KEYS[7], id, ARGV[3])
  local owner = redis.call('HGET', KEYS[6], id)
  if not owner or owner == ARGV[8] then
    -- keep (or take back) the lease; if another node took the delivery over meanwhile (this
    -- one's lease ended during the attempt), it stays that node's: our next renewal drops it
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZADD', KEYS[5], ARGV[7], id)
    redis.call('HSET', KEYS[6], id, ARGV[8])
  end
else
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
  redis.call('HDEL', KEYS[7], id)
end
if ARGV[10] ~= '' and redis.call('HEXISTS', KEYS[8], ARGV[9]) == 1 then
  redis.call('HSET', KEYS[8], ARGV[9], ARGV[10])
end
return 1
