-- Fan out a non-history message (presence join/leave) on a channel's pub/sub channel.
-- KEYS[1] pub/sub channel {tidings:<ch>}:pub   ARGV[1] "publish" or "spublish"   ARGV[2] message
return redis.call(ARGV[1], KEYS[1], ARGV[2])
