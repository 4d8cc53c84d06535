-- Leases of a shared budget: renew this process's, and count the unexpired ones.
--
-- A lease is a slot's claim with an expiry (server TIME); a live process renews its own
-- (heartbeat), so a process killed with SIGKILL frees its slots when they expire. ZADD XX: a
-- lease that already expired is not brought back (its slot may be someone else's by now).
-- KEYS: 1 leases zset.  ARGV: 1 lease_us  2.. lease ids to renew (none: only count)
-- Returns the number of unexpired leases after the renewal.
local leases = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', leases, 'XX', expiry, ARGV[i])
end
if #ARGV > 1 then
  redis.call('PEXPIRE', leases, math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return redis.call('ZCARD', leases)
