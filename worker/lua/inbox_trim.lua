-- Delete one batch of inbox events received at or before a cutoff (producers/inbox.py), atomically.
--
-- ARGV[1] key prefix "<p>"   ARGV[2] cutoff (ms)   ARGV[3] batch size
-- Each event's hash goes with its entries in the inbox and its outcome index. Running it twice
-- deletes nothing more than once would. Returns the number of events deleted.
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. ':events', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local event = p .. ':event:' .. id
  local outcome = redis.call('HGET', event, 'outcome')
  if outcome then
    redis.call('ZREM', p .. ':events:outcome:' .. outcome, id)
  end
  redis.call('DEL', event)
  redis.call('ZREM', p .. ':events', id)
end
return #ids
