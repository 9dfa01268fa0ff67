-- Append one publication to a channel's history and fan it out, atomically (one EVALSHA).
--
-- KEYS[1] meta hash {tidings:<ch>}:meta   fields e (epoch), o (last offset)
-- KEYS[2] history stream {tidings:<ch>}:history   entry id "<offset>-0", fields p (payload), t (ms)
-- KEYS[3] idempotency key {tidings:<ch>}:idem:<key> (any key of the slot when there is none)
-- KEYS[4] pub/sub channel {tidings:<ch>}:pub (declared as a key so a cluster routes SPUBLISH)
-- ARGV[1] the publication JSON without its opening brace and without offset/epoch
-- ARGV[2] a fresh epoch, used only when the channel has none (meta missing: history lost)
-- ARGV[3] history size (0: keep no history)   ARGV[4] history TTL in ms (0: none)
-- ARGV[5] meta TTL in ms (0: none)            ARGV[6] idempotency window in ms (0: no key)
-- ARGV[7] "publish" or "spublish"             ARGV[8] publication time in ms
-- Returns {1, offset, epoch} for a new publication, {0, payload} for a remembered duplicate.
local idem_ms = tonumber(ARGV[6])
if idem_ms > 0 then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    return {0, seen}
  end
end

local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  -- A new epoch: whatever history a previous epoch left behind is not comparable any more.
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local payload = '{"offset":' .. offset .. ',"epoch":"' .. epoch .. '",' .. ARGV[1]

local size = tonumber(ARGV[3])
local ttl_ms = tonumber(ARGV[4])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0', 'p', payload, 't', ARGV[8])
  if ttl_ms > 0 then
    -- Drop an expired prefix, a bounded batch per publish: each publish adds one entry and may
    -- remove up to 16, so the prefix cannot grow. Readers also filter by time. The common case
    -- (oldest entry still fresh) costs one single-entry XRANGE.
    local horizon = tonumber(ARGV[8]) - ttl_ms
    local function fresh(entry)
      local fields = entry[2]
      for i = 1, #fields, 2 do
        if fields[i] == 't' then return tonumber(fields[i + 1]) >= horizon end
      end
      return true
    end
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
    if #oldest > 0 and not fresh(oldest[1]) then
      local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 16)
      local min_id = nil
      for _, entry in ipairs(head) do
        if fresh(entry) then
          min_id = entry[1]
          break
        end
      end
      if min_id == nil then
        -- All of the batch expired: drop up to and including its last entry ("N-0" < "N-1").
        min_id = string.gsub(head[#head][1], '-0$', '-1')
      end
      redis.call('XTRIM', KEYS[2], 'MINID', min_id)
    end
    redis.call('PEXPIRE', KEYS[2], ttl_ms)
  end
else
  redis.call('DEL', KEYS[2])
end

local meta_ms = tonumber(ARGV[5])
if meta_ms > 0 then
  redis.call('PEXPIRE', KEYS[1], meta_ms)
end
if idem_ms > 0 then
  redis.call('SET', KEYS[3], payload, 'PX', idem_ms)
end
redis.call(ARGV[7], KEYS[4], 'P' .. payload)
return {1, offset, epoch}
