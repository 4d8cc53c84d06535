-- LimiterBackend.admit for a shared budget: one atomic step on the Redis server's clock.
--
-- The rules of pipeline/api/limiter_backend.py (InMemoryBackend.admit), evaluated in one
-- script so that no two processes can both take the last unit of budget:
--   cool-down  -> wait until it ends (the limiter checks it first; this closes the race with a
--                 429 recorded by another process in between)
--   leases     -> at most max_in_flight unexpired leases (a killed process's leases expire);
--                 capped by the concurrency learned by any process of the budget
--   windows    -> at most `budget` starts in any window (+margin), globally and per endpoint;
--                 `budget` is capped by the rate learned by ANY process of the budget (a 429
--                 seen by one lowers the rate for all; an upward probe raises it for all)
--   gaps       -> the global and per-endpoint minimum interval; paced interval after a 429
-- Every instant is integer microseconds of the server's TIME, so hosts whose clocks disagree
-- still share one window. The caller's instants arrive as offsets from its own `now`.
--
-- KEYS: 1 starts zset (member -> start us)  2 endpoint starts zset
--       3 leases zset (lease id -> expiry us)  4 state hash  5 learned hash (rate, concurrency)
-- ARGV: 1 window_us  2 margin_us  3 budget  4 interval_us  5 max_in_flight
--       6 endpoint budget ("" = none)  7 endpoint interval_us  8 paced interval_us
--       9 paced_from - now in us ("" = never)  10 lease_us  11 lease id  12 endpoint
-- Returns {code, value_us, now_us}: 0 admitted; 1 wait value_us; 2 no free slot.

local starts, ep_starts, leases, state, learned = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local window = tonumber(ARGV[1])
local margin = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local max_in_flight = tonumber(ARGV[5])
local ep_budget = tonumber(ARGV[6])
local ep_interval = tonumber(ARGV[7])
local paced_interval = tonumber(ARGV[8])
local paced_from_rel = tonumber(ARGV[9])
local lease_us = tonumber(ARGV[10])
local lease_id = ARGV[11]
local endpoint = ARGV[12]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local f = redis.call('HMGET', state, 'cooldown_until', 'last_start', 'last:' .. endpoint)
local cooldown_until = tonumber(f[1])
if cooldown_until and cooldown_until > now then
  return {1, cooldown_until - now, now}
end

local learned_f = redis.call('HMGET', learned, 'rate', 'concurrency')
local learned_conc = tonumber(learned_f[2])
if learned_conc then
  max_in_flight = math.min(max_in_flight, math.max(1, learned_conc))
end
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
if redis.call('ZCARD', leases) >= max_in_flight then
  return {2, 0, now}
end

local span = window + margin
-- A start at s counts while now < s + span; the wait is until the (excess+1)-th oldest leaves.
local function window_wait(key, allowed)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span)
  local excess = redis.call('ZCARD', key) - allowed
  if excess < 0 then
    return 0
  end
  local e = redis.call('ZRANGE', key, excess, excess, 'WITHSCORES')
  return tonumber(e[2]) + span - now
end

local learned_rate = tonumber(learned_f[1])
if learned_rate then
  budget = math.min(budget, math.max(1, math.floor(learned_rate + 1e-9)))
end
local wait = window_wait(starts, budget)
local last = tonumber(f[2])
if last then
  local gap = interval
  if paced_from_rel and last >= now + paced_from_rel then
    gap = math.max(paced_interval, interval)
  end
  wait = math.max(wait, last + gap - now)
end
if ep_budget then
  wait = math.max(wait, window_wait(ep_starts, ep_budget))
end
local ep_last = tonumber(f[3])
if ep_last then
  wait = math.max(wait, ep_last + ep_interval - now)
end
if wait > 0 then
  return {1, math.ceil(wait), now}
end

local member = now .. ':' .. lease_id
redis.call('ZADD', starts, now, member)
redis.call('ZADD', ep_starts, now, member)
redis.call('ZADD', leases, now + lease_us, lease_id)
redis.call('HSET', state, 'last_start', now, 'last:' .. endpoint, now)
-- Unused budgets vanish: the windows after one span, the leases after their lifetime.
local keep_ms = math.ceil(math.max(span, lease_us) / 1000) + 1000
redis.call('PEXPIRE', starts, keep_ms)
redis.call('PEXPIRE', ep_starts, keep_ms)
redis.call('PEXPIRE', leases, keep_ms)
return {0, 0, now}
