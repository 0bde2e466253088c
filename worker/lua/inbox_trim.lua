-- Delete one batch of inbox events received at or before a cutoff (producers/inbox.py), atomically.
--
-- ARGV[1] key prefix "<p>"   ARGV[2] cutoff (ms)   ARGV[3] batch size
-- Each event's hash goes with its entries in the inbox and its outcome index. Running it twice
-- deletes nothing more than once would. Returns the number of events deleted.
-- include: keys
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', K.events(p), '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local event = K.event(p, id)
  local outcome = redis.call('HGET', event, 'outcome')
  if outcome then
    redis.call('ZREM', K.events_by_outcome(p, outcome), id)
  end
  redis.call('DEL', event)
  redis.call('ZREM', K.events(p), id)
end
return #ids
