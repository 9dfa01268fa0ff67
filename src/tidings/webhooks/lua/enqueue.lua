-- Store a message and one delivery per endpoint, claimed by the enqueuing node (a lease).
-- KEYS[1] message hash  KEYS[2] seq counter  KEYS[3] pending zset (by seq)
-- KEYS[4] inflight zset (by lease end)  KEYS[5] owner hash  KEYS[6] next hash
-- then per delivery: KEYS[6+2i-1] delivery hash, KEYS[6+2i] its endpoint's zset (by seq)
-- ARGV[1] channel  ARGV[2] event  ARGV[3] body  ARGV[4] created_at  ARGV[5] lease end
-- ARGV[6] owner token  then per delivery: ARGV[6+2i-1] delivery id, ARGV[6+2i] endpoint id
-- Returns the seq of each delivery, or {} if the message was enqueued before.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {}
end
local message_id = string.match(KEYS[1], ':msg:(.*)$')
redis.call('HSET', KEYS[1], 'channel', ARGV[1], 'event', ARGV[2], 'body', ARGV[3],
           'created_at', ARGV[4])
local out = {}
local n = (#KEYS - 6) / 2
for i = 1, n do
  local id = ARGV[6 + 2 * i - 1]
  local seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[6 + 2 * i - 1], 'endpoint_id', ARGV[6 + 2 * i], 'message_id', message_id,
             'channel', ARGV[1], 'event', ARGV[2], 'status', 'pending', 'attempts', 0,
             'next_attempt_at', ARGV[4], 'created_at', ARGV[4], 'updated_at', ARGV[4], 'seq', seq)
  redis.call('ZADD', KEYS[6 + 2 * i], seq, id)
  redis.call('ZADD', KEYS[3], seq, id)
  redis.call('ZADD', KEYS[4], ARGV[5], id)
  redis.call('HSET', KEYS[5], id, ARGV[6])
  redis.call('HSET', KEYS[6], id, ARGV[4])
  out[#out + 1] = seq
end
return out
