-- The ids of the grants due now on the ledger's schedule, earliest first, read on Redis' own clock,
-- and how long until the next entry that is not due yet.
--
-- One round trip instead of TIME + ZRANGEBYSCORE + ZRANGE: every worker process's reconciler asks
-- once a pass, and on an idle system that question is most of the service's Redis traffic. Read-only.
--
-- KEYS[1]  schedule  <p>:due  ZSET grant id -> ms (Redis clock) when the grant is looked at next
-- ARGV[1]  the most ids returned
--
-- Returns {ids, next_ms}: next_ms is the milliseconds until the earliest entry after now, -1 for none.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
local after = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local next_ms = -1
if #after > 0 then
  next_ms = tonumber(after[2]) - now_ms
end
return {ids, next_ms}
