-- Remove a client from a channel's presence (idempotent).
-- KEYS[1] hash   KEYS[2] zset of lease ends   ARGV[1] client id
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
