-- Keep verified webhook deliveries in the event inbox with what handling each did (producers/inbox.py),
-- in one atomic step; concurrent deliveries share a call (producers/group_commit.py).
--
-- ARGV[1] key prefix "<p>"; touches <p>:event:<id>, <p>:events, <p>:events:outcome:<outcome>,
--         <p>:traffic:<hour>, and the "event" field of the grants an event made or found
-- ARGV[2] now (ms, the caller's clock: it orders the inbox and dates retention)
-- then 9 arguments per delivery:
--   id (derived from the source's own delivery id, so a redelivery finds its entry), source ("twitch",
--   "patreon"), kind (message type / trigger), the source's reference (Twitch message id; Patreon: a
--   digest of trigger and body), headers (JSON, no secrets), the raw body, outcome, detail (JSON),
--   "1" for an operator's re-processing (not a delivery: counted apart) else "0"
--
-- A new entry is written whole. An existing one keeps its first body and headers; a delivery is
-- counted; the outcome moves (with its index) unless the new one is "duplicate" (a redelivery, or
-- a re-processing racing another, must not hide what the first handling did). ``acted_at`` keeps the
-- first time the event made or found grants; ``unusable_reported`` is set the first time it is
-- unusable, so Sentry hears of it once.
-- Returns, per delivery, {outcome now on the entry, 1 if this call made it unusable for the first time}.
-- include: keys
local p, now = ARGV[1], ARGV[2]

-- Each grant the handling made or found names the event it came from (HSETNX: its first event, the one
-- that made it), if it still exists, so the console links a grant to its inbox entry.
local function link_grants(id, detail)
  local parsed = cjson.decode(detail)
  for _, name in ipairs({'granted', 'parked'}) do
    local list = parsed[name]
    if type(list) == 'table' then
      for _, grant_id in ipairs(list) do
        local grant = K.grant(p, grant_id)
        if redis.call('EXISTS', grant) == 1 then redis.call('HSETNX', grant, 'event', id) end
      end
    end
  end
end

-- Traffic: deliveries per source and outcome, per hour (<p>:traffic:<hours since the epoch>, kept 49 h).
local function count_traffic(source, outcome)
  local bucket = K.traffic(p, math.floor(tonumber(now) / 3600000))
  redis.call('HINCRBY', bucket, source .. ':' .. outcome, 1)
  redis.call('EXPIRE', bucket, 49 * 3600)
end

local function record(id, source, kind, ref, headers, body, outcome, detail, reprocess)
  if reprocess ~= '1' then count_traffic(source, outcome) end
  local event = K.event(p, id)
  local current = redis.call('HGET', event, 'outcome')
  local received = now
  if not current then
    redis.call('HSET', event, 'id', id, 'source', source, 'kind', kind, 'ref', ref, 'headers', headers,
      'body', body, 'received_at', now, 'last_received_at', now, 'deliveries', 1)
    redis.call('ZADD', K.events(p), now, id)
  else
    received = redis.call('HGET', event, 'received_at')
    if reprocess == '1' then
      redis.call('HINCRBY', event, 'reprocessed', 1)
      redis.call('HSET', event, 'reprocessed_at', now)
    else
      redis.call('HINCRBY', event, 'deliveries', 1)
      redis.call('HSET', event, 'last_received_at', now)
    end
    if outcome == 'duplicate' then
      return current, 0
    end
    redis.call('ZREM', K.events_by_outcome(p, current), id)
  end
  redis.call('ZADD', K.events_by_outcome(p, outcome), received, id)
  redis.call('HSET', event, 'outcome', outcome, 'detail', detail, 'settled_at', now)
  link_grants(id, detail)
  if outcome == 'granted' or outcome == 'parked' or outcome == 'duplicate' then
    redis.call('HSETNX', event, 'acted_at', now)
  end
  local first_unusable = 0
  if outcome == 'unusable' then
    first_unusable = redis.call('HSETNX', event, 'unusable_reported', now)
  end
  return outcome, first_unusable
end

local reply = {}
for i = 3, #ARGV, 9 do
  local outcome, first = record(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5],
    ARGV[i + 6], ARGV[i + 7], ARGV[i + 8])
  reply[#reply + 1] = outcome
  reply[#reply + 1] = first
end
return reply
