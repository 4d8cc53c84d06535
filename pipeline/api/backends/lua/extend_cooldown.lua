-- LimiterBackend.extend_cooldown: the shared silence after a 429 only ever grows.
--
-- The caller's `until` arrives as an offset from its own now, and is stored as an instant of
-- the server's TIME, so every process, whatever its clock, waits for the same end.
-- KEYS: 1 state hash.  ARGV: 1 until - now in us  2 cause (endpoint)
-- Returns {added_us, remaining_us}: what this call added to the union of cool-down intervals,
-- and how long the cool-down now lasts from the server's now.
local state = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wanted = now + tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', state, 'cooldown_until'))
if current and wanted <= current then
  return {0, current - now}
end
redis.call('HSET', state, 'cooldown_until', wanted, 'cooldown_cause', ARGV[2])
local from = now
if current and current > now then
  from = current
end
return {wanted - from, wanted - now}
