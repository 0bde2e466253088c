-- Create grants, each at most once per idempotency key, and optionally put their Dramatiq messages
-- on the queue in the same step (so nothing can sit between ledger and queue). One call carries one
-- or more producer events (concurrent webhooks are batched into one call); the call is atomic, and
-- the events are handled in order, each as if alone.
--
-- ARGV[1] is a JSON request (keys are derived from "prefix"; the service runs on one Redis
-- instance, not a cluster):
--   prefix    key prefix <p>
--   queue     Dramatiq's queue list "<p>:dramatiq:grants"; its messages hash is queue .. ".msgs"
--   wake      the queue's wake list: one token per message written is LPUSHed, then LTRIMmed to wake_max
--             (idle workers wait on it with BLPOP; a hint only, see worker/pickup.py)
--   now       epoch seconds; idem_ttl: seconds an idempotency claim lives; seen_ttl: of a seen marker
--   dispatch_ttl_ms  how long a written message may take to be claimed (see <p>:due)
--   inflight_cap     most grants a guild may have in flight for "enqueue" to write a message (0 = no cap);
--                    beyond, an "enqueue" grant is created as "schedule" (see lua/inflight.lua)
--   member_mark_ms   how long a written message marks its member as in flight (<p>:overflow-member:<g>:<u>,
--                    lua/dispatch_due.lua); 0 = no mark
--   events    list of {seen, counter, grants}:
--     seen    "" or a key: the event answers {seen=true} and does nothing if it exists; it is SET
--             (NX, seen_ttl) once the event's grants are written
--     counter "" or a counter name to HINCRBY in <p>:counters after the event's grants
--     grants  list of {id, idem, keep_claim, mode, fields (flat field/value list), guild, user, platform, external_id,
--             static_user, reason, message_id, message, token, source, terms (search terms, worker/grant_index.py)}
--             mode "enqueue":  state queued, Dramatiq message written (HSET queue.msgs + RPUSH queue),
--                              its dispatch token and message id on the grant, in its guild's in-flight
--                              set, due when the message should be claimed
--                  "schedule": state queued, due now (a worker's reconciler dispatches it)
--                  "park":    state parked, id added to <p>:parked:<platform>:<external id>
--                  "resolve": the run-time link (HGET <p>:links:<platform>), else static_user, gives
--                             user_id → as "enqueue"; no user → as "park"
--             keep_claim true: the claim is SET without a TTL (a once-ever key, e.g. a viewer's follow)
-- Keys touched per grant: <p>:idem:<idem>, <p>:grant:<id>, <p>:grant:<id>:history,
-- <p>:state:<state>, <p>:grants, <p>:due, <p>:pending:<guild>:<user>, the parked set or Dramatiq
-- queue named above and the secondary indexes (lua/grant_index.lua); per call the wake list.
--
-- Returns JSON {events=[{seen=bool, grants=[...]}]}, one entry per event in request order. A created
-- grant is {created=true, id, state, user_id} (the rest is what the caller sent); for a taken key it
-- is {created=false, id, hash={field=value}}: the grant that took the key (hash empty if it has
-- since been deleted by hand).
-- include: keys
-- include: enqueue_message
-- include: grant_index
-- include: inflight

local req = cjson.decode(ARGV[1])
local p = req.prefix
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local written = 0

-- Grants in flight per guild (lua/inflight.lua), read once per call: a grant gets its message here only
-- while its guild has fewer than inflight_cap; beyond, it is due now and a reconciler dispatches it
-- within its own cap, or pushes it to its key's pace (lua/dispatch_due.lua).
local inflight = {}
local function room(guild)
  if (req.inflight_cap or 0) <= 0 then return true end
  if not inflight[guild] then inflight[guild] = redis.call('ZCARD', inflight_key(p, guild)) end
  return inflight[guild] < req.inflight_cap
end

local function read_hash(key)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

local function create(g)
  local claim = K.idempotency(p, g.idem)
  local existing = redis.call('GET', claim)
  if existing then
    return {created = false, id = existing, hash = read_hash(K.grant(p, existing))}
  end
  local mode = g.mode
  local user = nil
  if mode == 'resolve' then
    user = redis.call('HGET', K.links(p, g.platform), g.external_id)
    if not user and g.static_user ~= '' then user = g.static_user end
    if user then mode = 'enqueue' else mode = 'park' end
  end
  local state = (mode == 'park') and 'parked' or 'queued'
  local key = K.grant(p, g.id)
  if g.keep_claim then
    redis.call('SET', claim, g.id)
  else
    redis.call('SET', claim, g.id, 'EX', req.idem_ttl)
  end
  redis.call('HSET', key, unpack(g.fields))
  redis.call('HSET', key, 'state', state)
  if user then redis.call('HSET', key, 'user_id', user) end
  redis.call('RPUSH', K.history(p, g.id), cjson.encode({from = '', to = state, at = req.now, reason = g.reason}))
  redis.call('ZADD', K.state_index(p, state), req.now, g.id)
  redis.call('ZADD', K.all_grants(p), req.now, g.id)
  gi_created(p, g.id, g.guild, g.source, state, req.now, req.now, g.terms)
  if user then gi_add_term(p, g.id, user, req.now) end
  if mode ~= 'park' then
    -- The user's pending index: the grants a merged request may carry (worker.coalesce).
    redis.call('SADD', K.pending(p, g.guild, (user or g.user)), g.id)
  end
  if mode == 'enqueue' and not room(g.guild) then
    mode = 'schedule'
  end
  if mode == 'enqueue' then
    enqueue_message(req.queue, g.message_id, g.message)
    written = written + 1
    redis.call('HSET', key, 'dispatch', g.token, 'dispatch_msg', g.message_id)
    redis.call('ZADD', K.due(p), now_ms + req.dispatch_ttl_ms, g.id)
    redis.call('ZADD', inflight_key(p, g.guild), now_ms, g.id)
    inflight[g.guild] = (inflight[g.guild] or 0) + 1
    if (req.member_mark_ms or 0) > 0 then
      -- The member has a grant in flight: its others need no overflow seat of their own (dispatch_due.lua).
      local mark = now_ms .. ':' .. g.id
      redis.call('SET', K.overflow_member(p, g.guild, (user or g.user)), mark, 'PX', req.member_mark_ms)
    end
  elseif mode == 'schedule' then
    redis.call('ZADD', K.due(p), now_ms, g.id)
  else
    redis.call('SADD', K.parked(p, g.platform, g.external_id), g.id)
  end
  return {created = true, id = g.id, state = state, user_id = user or ''}
end

local answers = {}
for _, event in ipairs(req.events) do
  if event.seen ~= '' and redis.call('EXISTS', event.seen) == 1 then
    answers[#answers + 1] = {seen = true, grants = {}}
  else
    local out = {}
    for _, g in ipairs(event.grants) do out[#out + 1] = create(g) end
    if event.seen ~= '' then
      redis.call('SET', event.seen, '1', 'NX', 'EX', req.seen_ttl)
    end
    if event.counter ~= '' then
      redis.call('HINCRBY', K.counters(p), event.counter, 1)
    end
    answers[#answers + 1] = {seen = false, grants = out}
  end
end
wake_consumers(req.wake, written, req.wake_max)
return cjson.encode({events = answers})
