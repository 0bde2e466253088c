-- One atomic step of a grant, or of every grant of one merged request (coalescing): their state change
-- with history and state index, the schedule that keeps them moving, and whatever else the step changes
-- (lease, rate slot, profile snapshot, verify hold). Safe to run twice (redis-py may resend an EVALSHA
-- whose first run went through): a step guarded by "attempt" answers 2 for a grant the second time.
--
-- KEYS[1]  grant    <p>:grant:<id>          HASH  (of the first grant; the others' keys follow the prefix)
-- KEYS[2]  history  <p>:grant:<id>:history  LIST
-- ARGV[1]  JSON request:
--   prefix, ids       key prefix <p> and the grant ids the step is for (the script also touches
--                     <p>:state:<s>, <p>:due, <p>:pending:<guild>:<user>, <p>:hold:<guild>:<user>, the
--                     secondary indexes (lua/grant_index.lua) and the keys named below: one Redis instance, not a cluster). All grants of one call belong
--                     to one (guild, user); each is checked and moved on its own.
--   expect            allowed current states ([] = any)
--   unless_flagged    fields that, set to "1", forbid the step (e.g. a cancel of a grant that may have
--                     been applied: "verify", "maybe_applied")
--   attempt           "" or the run token that must be the grant's "attempt" (a worker's own send)
--   begin             "" or the run token of a request this step starts: it becomes "attempt", and a
--                     resent step finds it there and answers 2
--   to, now, entry    new state; epoch seconds (history, index, updated_at); history JSON with "%FROM%"
--   add_attempt       1 = one more request sent; failures: "0", "1" or "reset"
--   fields            {field: value} to set on every grant; per_grant: {id: {field: value}} for one
--   del_fields        [field] to remove
--   due_ms            for to = queued/retrying/sending: when the reconciler looks at it next, in ms from
--                     Redis' clock (0 = now). Every other state leaves the schedule.
--   lease_release     optional {key, value}: delete the lease if it still holds value
--   lease_set         optional {key, value, px}: (re)set the lease; the step does not happen unless
--                     the lease holds value (the run still owns the user: a lease that ran out may
--                     have let another run claim the user and send meanwhile)
--   slot              optional {key, member, pending, ttl_ms}: the rate slot counts from now (its answer
--                     came back) and leaves the pending set (pending "": no answer came back, it stays
--                     pending); done even when no grant moves
--   profile           optional {key, json, at, ttl}: store the user's profile snapshot (key is derived
--                     from the grants' guild and user; the caller's copy is informational)
--   profile_ttl       seconds a snapshot lives (a move to "unknown" marks the user's snapshot stale)
--   hold              "set" | "clear" | "": the user's verify hold (other grants of the user wait); "set"
--                     gives it to the first grant that moved
--   park              optional {set, registry, name}: the parked index (SET) the grants join (a step to
--                     "parked"), and the SET of such indexes' names it is registered in
--   possible_duplicate 1 = count a resend that may duplicate an applied request
--   all_or_nothing    1 = move no grant unless every grant can move (a request starting: its grants
--                     go out together or not at all)
--   expect_history    -1, or how many history entries the first grant must have: an operator's form
--                     names the grant as they saw it, so a form sent again after anything happened
--                     to the grant does nothing
--
-- Returns {code, state} for the first grant (1 = moved from state, 2 = this attempt was already recorded,
-- 0 = not moved, state = its current state or ""), then the ids of every grant with code 1 or 2.
-- include: keys
-- include: moving_states
-- include: grant_index
-- include: inflight

local req = cjson.decode(ARGV[1])
local p = req.prefix
local ids = req.ids

local function check(key)
  local current = redis.call('HGET', key, 'state')
  if not current then
    return 0, ''
  end
  if req.begin ~= '' and redis.call('HGET', key, 'attempt') == req.begin then
    return 2, current
  end
  if req.attempt ~= '' then
    local h = redis.call('HMGET', key, 'attempt', 'recorded')
    if h[2] == req.attempt then
      return 2, current
    end
    if h[1] ~= req.attempt then
      return 0, current
    end
  end
  for _, flag in ipairs(req.unless_flagged) do
    if redis.call('HGET', key, flag) == '1' then
      return 0, current
    end
  end
  if #req.expect > 0 then
    local allowed = false
    for _, state in ipairs(req.expect) do
      if state == current then allowed = true end
    end
    if not allowed then
      return 0, current
    end
  end
  return 1, current
end

if (req.expect_history or -1) >= 0 and redis.call('LLEN', K.history(p, ids[1])) ~= req.expect_history then
  local _, current = check(K.grant(p, ids[1]))
  return {0, current}
end

if req.lease_set then
  local holder = redis.call('GET', req.lease_set.key)
  if holder ~= req.lease_set.value then
    local _, current = check(K.grant(p, ids[1]))
    return {0, current}
  end
end

if req.all_or_nothing == 1 then
  -- A resent step finds its grants answered (2): that is no reason to stop.
  for _, id in ipairs(ids) do
    if check(K.grant(p, id)) == 0 then
      local _, first = check(K.grant(p, ids[1]))
      return {0, first}
    end
  end
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local to = req.to
local first_code, first_state = 0, ''
local answered = {}
local moved_ids = {}
local who = nil

for index, id in ipairs(ids) do
  local key = K.grant(p, id)
  local code, current = check(key)
  if index == 1 then first_code, first_state = code, current end
  if code > 0 then answered[#answered + 1] = id end
  if code == 1 then
    moved_ids[#moved_ids + 1] = id
    local fields = {'state', to, 'updated_at', req.now}
    for k, v in pairs(req.fields) do
      fields[#fields + 1] = k
      fields[#fields + 1] = v
    end
    local own = req.per_grant and req.per_grant[id]
    if own then
      for k, v in pairs(own) do
        fields[#fields + 1] = k
        fields[#fields + 1] = v
      end
    end
    if req.attempt ~= '' then
      fields[#fields + 1] = 'recorded'
      fields[#fields + 1] = req.attempt
    end
    if req.begin ~= '' then
      fields[#fields + 1] = 'attempt'
      fields[#fields + 1] = req.begin
    end
    redis.call('HSET', key, unpack(fields))
    for _, f in ipairs(req.del_fields) do redis.call('HDEL', key, f) end
    if req.add_attempt == 1 then redis.call('HINCRBY', key, 'attempts', 1) end
    if req.possible_duplicate == 1 then redis.call('HINCRBY', key, 'possible_duplicates', 1) end
    if req.failures == 'reset' then
      redis.call('HSET', key, 'failures', 0)
    elseif req.failures == '1' then
      redis.call('HINCRBY', key, 'failures', 1)
    end
    local entry = string.gsub(req.entry, '%%FROM%%', current, 1)
    redis.call('RPUSH', K.history(p, id), entry)
    redis.call('ZREM', K.state_index(p, current), id)
    redis.call('ZADD', K.state_index(p, to), req.now, id)
    -- The schedule: every grant that should move has an entry; its Dramatiq message is only a hint. After a
    -- step no message is live any more: the reconciler writes one when the grant is due.
    local g = redis.call('HMGET', key, 'guild_id', 'user_id')
    if MOVING_STATES[to] then
      -- Still moving: no message is live, but a grant in flight keeps its place (lua/inflight.lua).
      redis.call('HDEL', key, 'dispatch', 'dispatch_msg')
      redis.call('ZADD', inflight_key(p, g[1]), 'XX', now_ms, id)
      if to == 'sending' then
        -- The member's request goes out: a grant of the member due from now on is not in it.
        redis.call('DEL', K.overflow_member(p, tostring(g[1]), tostring(g[2])))
      end
    else
      inflight_clear(p, key, id, g[1])
    end
    who = who or g
    gi_moved(p, id, tostring(g[1]), current, to, req.now)
    -- The user's pending index: the grants a merged request may carry (worker.coalesce).
    local pending = K.pending(p, tostring(g[1]), tostring(g[2]))
    if MOVING_STATES[to] then
      redis.call('ZADD', K.due(p), now_ms + (req.due_ms or 0), id)
      redis.call('SADD', pending, id)
    else
      redis.call('ZREM', K.due(p), id)
      redis.call('SREM', pending, id)
      if redis.call('SCARD', pending) == 0 then
        -- Nothing of the member moves: its overflow seat (lua/dispatch_due.lua) goes too.
        redis.call('DEL', K.overflow_member(p, tostring(g[1]), tostring(g[2])))
      end
      -- Out of the key's line too (lua/sliding_window.lua): its place, and its member's once nothing
      -- of the member moves any more, would only make the waiters behind ask later than they could.
      local line = redis.call('HGET', key, 'line')
      if line then
        redis.call('ZREM', line, id)
        if redis.call('SCARD', pending) == 0 then
          redis.call('ZREM', line, 'member:' .. tostring(g[1]) .. ':' .. tostring(g[2]))
        end
        redis.call('HDEL', key, 'line')
      end
    end
    if req.park then
      redis.call('SADD', req.park.set, id)
      redis.call('SADD', req.park.registry, req.park.name)
    end
  end
end

local reply = {first_code, first_state}
for _, id in ipairs(answered) do reply[#reply + 1] = id end

if req.lease_release then
  if redis.call('GET', req.lease_release.key) == req.lease_release.value then
    redis.call('DEL', req.lease_release.key)
  end
end
-- The rate slot: its answer is back, whether or not this step moves a grant (another run may have taken
-- the grant over), so it counts from now and is no longer pending (lua/sliding_window.lua). GT, not XX:
-- a slot that left the window (its request lasted longer than a window) comes back, since the request
-- may have reached WetBot just now; a resent step only moves it later.
if req.slot then
  redis.call('ZADD', req.slot.key, 'GT', tonumber(t[1]) * 1000000 + tonumber(t[2]), req.slot.member)
  if req.slot.pending and req.slot.pending ~= '' then  -- '': no answer came back, the hold stays
    redis.call('ZREM', req.slot.pending, req.slot.member)
  end
  if req.slot.ttl_ms and redis.call('PTTL', req.slot.key) < 0 then
    redis.call('PEXPIRE', req.slot.key, tonumber(req.slot.ttl_ms))
  end
end
if #moved_ids == 0 then
  return reply
end
if req.lease_set then
  redis.call('SET', req.lease_set.key, req.lease_set.value, 'PX', req.lease_set.px)
end
-- The user's profile snapshot: its "seq" moves whenever what we know of the inventory changes, so a
-- read-back can tell whether its baseline is still the last thing known; "stale" says an outcome left
-- the inventory uncertain (the snapshot then cannot serve as a baseline until WetBot sends a new one).
local snapshot = K.profile(p, tostring(who[1]), tostring(who[2]))
if req.profile then
  redis.call('HSET', snapshot, 'profile', req.profile.json, 'at', req.profile.at)
  redis.call('HDEL', snapshot, 'stale')
  redis.call('HINCRBY', snapshot, 'seq', 1)
  redis.call('EXPIRE', snapshot, req.profile.ttl)
elseif to == 'unknown' then
  redis.call('HSET', snapshot, 'stale', '1')
  local seq = redis.call('HINCRBY', snapshot, 'seq', 1)
  redis.call('EXPIRE', snapshot, req.profile_ttl)
  -- These grants' own uncertainty does not make their own baseline wrong (a later read-back judges it).
  for _, id in ipairs(moved_ids) do
    local key = K.grant(p, id)
    local own = redis.call('HGET', key, 'baseline_seq')
    if own and own ~= '-1' then redis.call('HSET', key, 'baseline_seq', seq) end
  end
end
local hold = K.hold(p, tostring(who[1]), tostring(who[2]))
if req.hold == 'set' then
  redis.call('SET', hold, moved_ids[1])
elseif req.hold == 'clear' or not MOVING_STATES[to] then
  local holder = redis.call('GET', hold)
  for _, id in ipairs(moved_ids) do
    if holder == id then redis.call('DEL', hold) end
  end
end
return reply
