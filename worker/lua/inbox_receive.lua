-- Keep one verified webhook delivery in the event inbox (producers/inbox.py), atomically.
--
-- ARGV[1] key prefix "<p>"; touches <p>:event:<id>, <p>:events, <p>:events:outcome:received
-- ARGV[2] event id (derived from the source's own delivery id, so a redelivery finds its entry)
-- ARGV[3] now (ms, the caller's clock: it only orders the inbox and dates retention)
-- ARGV[4] source ("twitch", "patreon")   ARGV[5] kind (message type / trigger)
-- ARGV[6] the source's reference (Twitch message id; Patreon: digest of trigger and body)
-- ARGV[7] headers (JSON, no secrets)     ARGV[8] the raw body
--
-- A new entry starts with outcome "received" (nothing done yet: a crash now leaves it visible and
-- re-processable). A redelivery keeps the first body and headers and counts the delivery.
-- Returns {1 if new else 0, the entry's outcome}.
local p, id, now = ARGV[1], ARGV[2], ARGV[3]
local event = p .. ':event:' .. id
local outcome = redis.call('HGET', event, 'outcome')
if outcome then
  redis.call('HINCRBY', event, 'deliveries', 1)
  redis.call('HSET', event, 'last_received_at', now)
  return {0, outcome}
end
redis.call('HSET', event, 'id', id, 'source', ARGV[4], 'kind', ARGV[5], 'ref', ARGV[6], 'headers', ARGV[7],
  'body', ARGV[8], 'received_at', now, 'last_received_at', now, 'deliveries', 1, 'outcome', 'received')
redis.call('ZADD', p .. ':events', now, id)
redis.call('ZADD', p .. ':events:outcome:received', now, id)
return {1, 'received'}
