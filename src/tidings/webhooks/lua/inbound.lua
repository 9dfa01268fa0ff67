-- Remember an inbound delivery id for a receiver; forget those older than the window.
-- KEYS[1] zset (id -> seen at)  ARGV[1] id  ARGV[2] now  ARGV[3] oldest kept (now - ttl)
-- Returns 1 if the id is new, 0 if it was seen within the window.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
return redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
