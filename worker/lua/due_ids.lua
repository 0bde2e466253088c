-- The ids of the grants due now on the ledger's schedule, earliest first, read on Redis' own clock.
--
-- One round trip instead of TIME + ZRANGEBYSCORE: every worker process's reconciler asks once a
-- second, and on an idle system that question is most of the service's Redis traffic. Read-only.
--
-- KEYS[1]  schedule  <p>:due  ZSET grant id -> ms (Redis clock) when the grant is looked at next
-- ARGV[1]  the most ids returned
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
