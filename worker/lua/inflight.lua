-- A guild's in-flight set (worker.schedule): <p>:inflight:<guild>  ZSET grant id -> ms (Redis clock) of its
-- last dispatch or step. A grant is in it from its dispatch (the create and dispatch scripts add it with its
-- dispatch token) until it settles (lua/transition.lua: delivered, dead, unknown, cancelled, parked) or leaves
-- the schedule: while its message waits to be read, its run waits for a turn in its key's line (a hand-back),
-- its request is out, or it waits to be sent again (a 429, a backoff, a read-back). Such a grant comes back
-- whatever the cap; so the set holds what the key has not settled yet of what was handed out, and a cap on
-- new entries bounds the queue and the line together.
-- include: keys

local function inflight_key(p, guild)
  return K.inflight(p, tostring(guild))
end

-- Clear a grant's live message (token and message id) and overflow seat, and take it out of its guild's
-- in-flight set.
local function inflight_clear(p, key, id, guild)
  redis.call('HDEL', key, 'dispatch', 'dispatch_msg', 'seat')
  redis.call('ZREM', inflight_key(p, guild), id)
end
