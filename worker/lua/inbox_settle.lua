-- Record what handling an inbox event did (producers/inbox.py), atomically.
--
-- ARGV[1] key prefix "<p>"   ARGV[2] event id   ARGV[3] outcome   ARGV[4] detail (JSON)
-- ARGV[5] now (ms)
-- ARGV[6] "first": only settle an entry still "received" (a redelivery that found its grants made
--         already must not overwrite what the first delivery recorded); "unless-acted": not over
--         an outcome that names grants (a re-processing that found a concurrent one's grants);
--         "always": a (re)processing.
-- ARGV[7] "1" when this is an operator's re-processing (counted on the entry)
--
-- The outcome index moves with the outcome. ``acted_at`` keeps the first time the event made or
-- found grants (re-processing is refused once their idempotency claims may have expired).
-- ``unusable_reported`` is set the first time the event is unusable, so Sentry hears of it once.
-- Returns {outcome now on the entry, 1 if this call made it unusable for the first time else 0},
-- or {false, 0} when the entry is gone (trimmed meanwhile).
local p, id, outcome, detail, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local event = p .. ':event:' .. id
local current = redis.call('HGET', event, 'outcome')
if not current then
  return {false, 0}
end
if (ARGV[6] == 'first' and current ~= 'received')
    or (ARGV[6] == 'unless-acted' and (current == 'granted' or current == 'parked')) then
  return {current, 0}
end
local received = redis.call('HGET', event, 'received_at')
redis.call('ZREM', p .. ':events:outcome:' .. current, id)
redis.call('ZADD', p .. ':events:outcome:' .. outcome, received, id)
redis.call('HSET', event, 'outcome', outcome, 'detail', detail, 'settled_at', now)
if outcome == 'granted' or outcome == 'parked' or outcome == 'duplicate' then
  redis.call('HSETNX', event, 'acted_at', now)
end
if ARGV[7] == '1' then
  redis.call('HINCRBY', event, 'reprocessed', 1)
  redis.call('HSET', event, 'reprocessed_at', now)
end
local first_unusable = 0
if outcome == 'unusable' then
  first_unusable = redis.call('HSETNX', event, 'unusable_reported', now)
end
return {outcome, first_unusable}
