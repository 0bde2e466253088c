-- A queue message starts a run of its grant: check the message is the grant's live one, then take the
-- user's lease (one request per Discord user at a time, so profile snapshots stay in order). Lease
-- before rate slot: a duplicate or stale message never spends a slot.
--
-- KEYS[1]  grant     <p>:grant:<id>  HASH
-- KEYS[2]  schedule  <p>:due         ZSET
-- ARGV[1]  JSON request:
--   prefix, id   key prefix <p> and grant id (the script also touches <p>:lease:<g>:<u>, <p>:hold:<g>:<u>)
--   token        the message's dispatch token ("" for a message written before tokens existed)
--   run          this run's token; the lease holds "<id>:<run>"
--   lease_px     how long the lease lasts before the run starts its request (it is refreshed then)
--   busy_ms      when to look again if another grant of the user holds the lease or a verify hold
--
-- Returns {"claimed", state}, {"stale"}, {"final", state}, {"missing"} or {"busy", holder}. A claimed or busy
-- grant stays in its guild's in-flight set (lua/inflight.lua) until it settles; a final one leaves it.
-- include: keys
-- include: moving_states
-- include: inflight
local req = cjson.decode(ARGV[1])
local p, id = req.prefix, req.id
local g = redis.call('HMGET', KEYS[1], 'state', 'dispatch', 'guild_id', 'user_id')
local state, dispatch = g[1], g[2]
if not state then
  redis.call('ZREM', KEYS[2], id)
  return {'missing'}
end
if not MOVING_STATES[state] then
  redis.call('ZREM', KEYS[2], id)
  inflight_clear(p, KEYS[1], id, g[3])
  return {'final', state}
end
if (req.token ~= '' and dispatch ~= req.token) or (req.token == '' and dispatch) then
  return {'stale'}
end
-- The message is the grant's live one: whatever happens next, no copy of it may start a run.
redis.call('HDEL', KEYS[1], 'dispatch', 'dispatch_msg')
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold_key = K.hold(p, g[3], g[4])
local hold = redis.call('GET', hold_key)
local lease = K.lease(p, g[3], g[4])
if hold and hold ~= id then
  -- A hold whose grant no longer moves (deleted by hand, say) must not block the user for ever.
  local holder_state = redis.call('HGET', K.grant(p, hold), 'state')
  if not MOVING_STATES[holder_state] then
    redis.call('DEL', hold_key)
    hold = false
  end
end
if hold and hold ~= id then
  -- Wait for the holder's next look (its read-back), not a fixed poll: a read-back may back off for minutes.
  local holder_due = tonumber(redis.call('ZSCORE', KEYS[2], hold) or '0')
  redis.call('ZADD', KEYS[2], math.max(now_ms + req.busy_ms, holder_due + req.busy_ms), id)
  return {'busy', hold}
end
if not redis.call('SET', lease, id .. ':' .. req.run, 'NX', 'PX', req.lease_px) then
  local left = math.max(redis.call('PTTL', lease), 0)
  redis.call('ZADD', KEYS[2], now_ms + math.min(left, req.busy_ms) + 50, id)
  return {'busy', redis.call('GET', lease) or ''}
end
redis.call('ZADD', KEYS[2], now_ms + req.lease_px + 1000, id)
return {'claimed', state}
