-- Read a channel's position and (part of) its history in one atomic step.
--
-- KEYS[1] meta hash   KEYS[2] history stream
-- ARGV[1] a fresh epoch, stored when the channel has none (so the position a reader gets stays
--         valid for the first publication)   ARGV[2] meta TTL in ms (0: none)
-- ARGV[3] mode: "position" | "since" | "latest"
-- ARGV[4] requested epoch (since)   ARGV[5] requested offset (since)   ARGV[6] count
-- Returns {epoch, offset, {payload, ...}} with payloads in offset order.
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('DEL', KEYS[2])
  local meta_ms = tonumber(ARGV[2])
  if meta_ms > 0 then
    redis.call('PEXPIRE', KEYS[1], meta_ms)
  end
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
local mode = ARGV[3]
local entries = {}
if mode == 'since' then
  local requested = tonumber(ARGV[5])
  local from = '-'
  if ARGV[4] == epoch and requested <= offset then
    from = (requested + 1) .. '-0'
  end
  entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', tonumber(ARGV[6]))
elseif mode == 'latest' then
  local count = tonumber(ARGV[6])
  if count > 0 then
    local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)
    for i = #newest, 1, -1 do
      entries[#entries + 1] = newest[i]
    end
  end
end
local payloads = {}
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'p' then payloads[#payloads + 1] = fields[i + 1] end
  end
end
return {epoch, offset, payloads}
