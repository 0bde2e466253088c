-- Create grants, each at most once per idempotency key, in one atomic step, and optionally put
-- their Dramatiq messages on the queue in the same step (so nothing can sit between ledger and queue).
--
-- ARGV[1] is a JSON request (keys are derived from "prefix"; the service runs on one Redis
-- instance, not a cluster):
--   prefix    key prefix <p>
--   queue     Dramatiq's queue list "<p>:dramatiq:grants"; its messages hash is queue .. ".msgs"
--   now       epoch seconds; idem_ttl: seconds an idempotency claim lives
--   seen      "" or a key: answer {seen=true} and do nothing if it exists; SET it (NX, seen_ttl) at the end
--   counter   "" or a counter name to HINCRBY in <p>:counters at the end
--   grants    list of {id, idem, mode, fields (flat field/value list), platform, external_id,
--             static_user, reason, message_id, message}
--             mode "enqueue": state queued, Dramatiq message written (HSET queue.msgs + RPUSH queue)
--                  "outbox":  state queued, id added to <p>:outbox (the caller enqueues, then clears it)
--                  "park":    state parked, id added to <p>:parked:<platform>:<external id>
--                  "resolve": the run-time link (HGET <p>:links:<platform>), else static_user, gives
--                             user_id → as "enqueue"; no user → as "park"
-- Keys touched per grant: <p>:idem:<idem>, <p>:grant:<id>, <p>:grant:<id>:history,
-- <p>:state:<state>, <p>:grants, and the outbox, parked set or Dramatiq queue named above.
--
-- Returns JSON {seen=bool, grants=[{created=bool, id=str, in_outbox=bool, hash={field=value}}]}:
-- for a taken key, the grant that took it (hash empty if it has since been deleted by hand).
local req = cjson.decode(ARGV[1])
local p = req.prefix
if req.seen ~= '' and redis.call('EXISTS', req.seen) == 1 then
  return cjson.encode({seen = true, grants = {}})
end

local function read_hash(key)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

local out = {}
for _, g in ipairs(req.grants) do
  local claim = p .. ':idem:' .. g.idem
  local existing = redis.call('GET', claim)
  if existing then
    local in_outbox = redis.call('ZSCORE', p .. ':outbox', existing) ~= false
    out[#out + 1] = {created = false, id = existing, in_outbox = in_outbox, hash = read_hash(p .. ':grant:' .. existing)}
  else
    local mode = g.mode
    local user = nil
    if mode == 'resolve' then
      user = redis.call('HGET', p .. ':links:' .. g.platform, g.external_id)
      if not user and g.static_user ~= '' then user = g.static_user end
      if user then mode = 'enqueue' else mode = 'park' end
    end
    local state = (mode == 'park') and 'parked' or 'queued'
    local key = p .. ':grant:' .. g.id
    redis.call('SET', claim, g.id, 'EX', req.idem_ttl)
    redis.call('HSET', key, unpack(g.fields))
    redis.call('HSET', key, 'state', state)
    if user then redis.call('HSET', key, 'user_id', user) end
    redis.call('RPUSH', key .. ':history', cjson.encode({from = '', to = state, at = req.now, reason = g.reason}))
    redis.call('ZADD', p .. ':state:' .. state, req.now, g.id)
    redis.call('ZADD', p .. ':grants', req.now, g.id)
    if mode == 'enqueue' then
      redis.call('HSET', req.queue .. '.msgs', g.message_id, g.message)
      redis.call('RPUSH', req.queue, g.message_id)
    elseif mode == 'outbox' then
      redis.call('ZADD', p .. ':outbox', req.now, g.id)
    else
      redis.call('SADD', p .. ':parked:' .. g.platform .. ':' .. g.external_id, g.id)
    end
    out[#out + 1] = {created = true, id = g.id, in_outbox = (mode == 'outbox'), hash = read_hash(key)}
  end
end
if req.seen ~= '' then
  redis.call('SET', req.seen, '1', 'NX', 'EX', req.seen_ttl)
end
if req.counter ~= '' then
  redis.call('HINCRBY', p .. ':counters', req.counter, 1)
end
return cjson.encode({seen = false, grants = out})
