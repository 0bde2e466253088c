-- A guild's in-flight set (worker.schedule): <p>:inflight:<guild>  ZSET grant id -> ms (Redis clock) when it
-- was last dispatched. A grant is in it from its dispatch (the create and dispatch scripts add it with its
-- dispatch token) until its next step (lua/transition.lua: it is sent, settled, cancelled, parked) or until it
-- leaves the schedule: while its message waits to be read, and while its run waits for a turn in its key's
-- line (a hand-back keeps its place). So the set holds what the key has not served yet of what was handed
-- out, and a cap on it bounds the queue and the line together.

local function inflight_key(p, guild)
  return p .. ':inflight:' .. tostring(guild)
end

-- Clear a grant's live message (token and message id) and take it out of its guild's in-flight set.
local function inflight_clear(p, key, id, guild)
  redis.call('HDEL', key, 'dispatch', 'dispatch_msg')
  redis.call('ZREM', inflight_key(p, guild), id)
end
