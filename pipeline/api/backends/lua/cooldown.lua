-- LimiterBackend.cooldown: how long the shared cool-down still runs, on the server's clock.
-- KEYS: 1 state hash.  Returns {remaining_us or false, cause} (negative: it has passed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('HMGET', KEYS[1], 'cooldown_until', 'cooldown_cause')
local until_us = tonumber(f[1])
if not until_us then
  return {false, ''}
end
return {until_us - now, f[2] or ''}
