-- A guild's in-flight set (worker.schedule): <p>:inflight:<guild>  ZSET grant id -> ms (Redis clock) when its
-- live message was written. A grant is in it exactly while it has a dispatch token whose message no run
-- has claimed yet: the create and dispatch scripts add it with the token, every step that clears the token
-- (a claim, a hand-back, a transition, leaving the schedule) takes it out.

local function inflight_key(p, guild)
  return p .. ':inflight:' .. tostring(guild)
end

-- Clear a grant's live message (token and message id) and take it out of its guild's in-flight set.
local function inflight_clear(p, key, id, guild)
  redis.call('HDEL', key, 'dispatch', 'dispatch_msg')
  redis.call('ZREM', inflight_key(p, guild), id)
end
