-- The reconciler's step: give every grant whose schedule entry is due a fresh queue message, once, within
-- its guild's in-flight cap, and never a second copy of a message that is only waiting to be read.
--
-- KEYS[1]  schedule  <p>:due  ZSET grant id -> ms (Redis clock) when the grant is looked at next
-- ARGV[1]  JSON request:
--   prefix      key prefix <p> (the script reads <p>:grant:<id> and <p>:lease:<guild>:<user>, and keeps
--               <p>:inflight:<guild>, <p>:overflow:<guild> and <p>:overflow-member:<guild>:<user>; it counts
--               <p>:by-guild:<guild>:<state>)
--   queue       Dramatiq's queue list; its messages hash is queue .. ".msgs"
--   namespace, queue_name  Dramatiq's namespace and the queue's name: a worker's fetched-but-unacked
--               messages are in the SET namespace .. ":__acks__." .. <worker id> .. "." .. queue_name, for
--               every worker id in the ZSET namespace .. ":__heartbeats__"
--   wake        the queue's wake list: one token per message written is LPUSHed, then LTRIMmed to wake_max
--   ttl_ms      how long a dispatched message may take to be claimed before it is looked at again
--   lost_ms     how long a message that is still unread is trusted to be read before a copy is written
--   cap         most grants in flight per guild (0 = no cap); limit, window_ms: the key's requests per
--               window and the window's ms (its limiter's, a margin longer); coalesce 1 = a member's pending
--               grants go out in one request
--   candidates  [{id, token, msg_id, body}] read as due just before; each is checked again here
--
-- A grant that is final, parked or gone leaves the schedule. A grant still "sending" whose lease is
-- held by a live run is pushed back to when that lease ends. A grant whose live message (its "dispatch"
-- token, its message id "dispatch_msg") is still in the messages hash and in no worker's fetched set is
-- unread, behind others in the queue: it is looked at again a ttl later, without a copy (until lost_ms
-- after its dispatch). A message gone from the hash (lost with Redis, acked without running) or fetched
-- and still unclaimed after ttl_ms (a dead worker's) is written again. A guild whose cap of grants in
-- flight (lua/inflight.lua: dispatched, not settled) is reached gets no new one: the grant is pushed to
-- the guild's overflow frontier, a seat in the key's next window after every grant already seated or in
-- flight, so the backlog comes due at the key's pace, each grant once. Every other due grant gets a new
-- dispatch token (a message with an older token is a no-op when it runs). Returns {id, token} pairs.
-- include: keys
-- include: moving_states
-- include: enqueue_message
-- include: inflight

local req = cjson.decode(ARGV[1])
local p = req.prefix
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local msgs = req.queue .. '.msgs'
local out = {}
local written = 0

-- Per guild, once per call: its in-flight set (entries no message can still answer for are dropped), how
-- many it holds, and (lazily) how many of its grants move.
local guilds = {}
local function guild_state(guild)
  local s = guilds[guild]
  if not s then
    local key = inflight_key(p, guild)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - req.lost_ms - 2 * req.ttl_ms)
    s = {key = key, count = redis.call('ZCARD', key), name = guild}
    guilds[guild] = s
  end
  return s
end

local function moving_count(s)
  if not s.moving then
    s.moving = 0
    for state in pairs(MOVING_STATES) do
      s.moving = s.moving + redis.call('ZCARD', K.guild_state(p, s.name, state))
    end
  end
  return s.moving
end

-- When an over-cap grant is looked at next: a seat in the guild's overflow frontier (<p>:overflow:<guild>,
-- a HASH {at, seats}), the next window of the key with a seat free (limit seats a window, window_ms apart),
-- after the windows the grants in flight take; never later than the guild's moving grants could take
-- (grants cancelled or merged since leave no gap). A window's grants come due together, when the key's
-- slots free together, and go out as the line would send them.
local function seat_at(s)
  local key = K.overflow(p, s.name)
  local f = redis.call('HMGET', key, 'at', 'seats')
  local at, seats = tonumber(f[1] or '0'), tonumber(f[2] or '0')
  local first = now_ms + math.ceil(s.count / req.limit) * req.window_ms
  if at < first then at, seats = first, 0 end
  if seats >= req.limit then at, seats = at + req.window_ms, 0 end
  local moving = moving_count(s)
  local last = now_ms + math.ceil(moving / req.limit) * req.window_ms
  if moving > 0 and at > last then at, seats = last, 0 end
  redis.call('HSET', key, 'at', at, 'seats', seats + 1)
  redis.call('PEXPIRE', key, math.ceil(at - now_ms + req.window_ms) + 1000)
  return at
end

-- With coalescing, one request carries every pending grant of a member: a member whose grant was dispatched
-- and not sent yet, or seated, is marked (<p>:overflow-member:<guild>:<user> = "<ms>:<grant id>", the
-- dispatch's or the seat's time; a step into sending or the member's last grant settling removes it,
-- lua/transition.lua). Its other grants need neither a place in flight nor a seat: they come due with the
-- seated one, or a TTL after a dispatch, by when the member's request has most likely carried them.
local function member_key(g)
  return K.overflow_member(p, g[2], g[3])
end

local function mark_member(g, at, id)
  if req.coalesce == 1 then
    redis.call('SET', member_key(g), at .. ':' .. id, 'PX', math.ceil(math.max(at - now_ms, 0)) + req.ttl_ms)
  end
end

-- When another grant of the member is due (its seat) or was dispatched (now or earlier), nil for none.
local function mate_at(g, id)
  if req.coalesce ~= 1 then return nil end
  local mark = redis.call('GET', member_key(g))
  if not mark then return nil end
  local at, owner = string.match(mark, '^([^:]+):(.*)$')
  if owner == id then return nil end
  return tonumber(at)
end

local workers = nil
local function fetched(msg_id)
  if not workers then
    workers = redis.call('ZRANGE', req.namespace .. ':__heartbeats__', 0, -1)
  end
  for _, w in ipairs(workers) do
    if redis.call('SISMEMBER', req.namespace .. ':__acks__.' .. w .. '.' .. req.queue_name, msg_id) == 1 then
      return true
    end
  end
  return false
end

-- True when the grant's live message waits unread in the queue, trusted for lost_ms after its dispatch.
local function unread(key, s, id)
  local h = redis.call('HMGET', key, 'dispatch', 'dispatch_msg')
  if not (h[1] and h[2]) or redis.call('HEXISTS', msgs, h[2]) == 0 or fetched(h[2]) then
    return false
  end
  local since = redis.call('ZSCORE', s.key, id)
  return since ~= false and now_ms - tonumber(since) < req.lost_ms
end

local function dispatch(c, key, s)
  redis.call('HDEL', key, 'seat')
  enqueue_message(req.queue, c.msg_id, c.body)
  redis.call('HSET', key, 'dispatch', c.token, 'dispatch_msg', c.msg_id)
  written = written + 1
  redis.call('ZADD', KEYS[1], now_ms + req.ttl_ms, c.id)
  s.count = s.count + redis.call('ZADD', s.key, now_ms, c.id)
  out[#out + 1] = {c.id, c.token}
end

for _, c in ipairs(req.candidates) do
  local score = redis.call('ZSCORE', KEYS[1], c.id)
  if score and tonumber(score) <= now_ms then
    local key = K.grant(p, c.id)
    local g = redis.call('HMGET', key, 'state', 'guild_id', 'user_id')
    if not g[1] or not MOVING_STATES[g[1]] then
      redis.call('ZREM', KEYS[1], c.id)
      if g[1] then inflight_clear(p, key, c.id, g[2]) end
    else
      local lease = K.lease(p, g[2], g[3])
      local holder = redis.call('GET', lease)
      local s = guild_state(g[2])
      if holder and string.sub(holder, 1, #c.id + 1) == c.id .. ':' then
        redis.call('ZADD', KEYS[1], now_ms + math.max(redis.call('PTTL', lease), 0) + 1000, c.id)
      elseif unread(key, s, c.id) then
        redis.call('ZADD', KEYS[1], now_ms + req.ttl_ms, c.id)
      else
        -- A grant already in flight (back for its turn in the key's line, after a 429 or a backoff, its
        -- worker killed, its message lost) keeps its place; a new one rides with its member's request, or
        -- needs room under the cap, or a seat. A seated grant was paced already: it goes up to twice the
        -- cap (a window's seats come due together, while the last window's grants may still wait for their
        -- turns), so it rarely loses its window.
        local placed = redis.call('ZSCORE', s.key, c.id)
        local mate = not placed and mate_at(g, c.id)
        local room = req.cap
        if redis.call('HGET', key, 'seat') then room = 2 * req.cap end
        if mate and mate <= now_ms then
          redis.call('HDEL', key, 'dispatch', 'dispatch_msg', 'seat')
          redis.call('ZADD', KEYS[1], now_ms + req.ttl_ms, c.id)
        elseif not placed and req.cap > 0 and s.count >= room then
          redis.call('HDEL', key, 'dispatch', 'dispatch_msg')
          local at = mate or seat_at(s)
          if not mate then mark_member(g, at, c.id) end
          redis.call('HSET', key, 'seat', '1')
          redis.call('ZADD', KEYS[1], at, c.id)
        else
          dispatch(c, key, s)
          mark_member(g, now_ms, c.id)
        end
      end
    end
  end
end
wake_consumers(req.wake, written, req.wake_max)
return out
