-- Decide the fate of the Twitch redemptions whose grants stopped moving (producers/twitch/redemptions.py),
-- each in this one atomic step with the grants' states it rests on:
--   a grant still queued, sending, retrying, parked or unknown      -> wait (a later move brings it back)
--   any grant delivered                                             -> FULFILLED (the viewer got the reward)
--   every grant dead or cancelled, nothing of them can have been
--   applied, and refunds are on                                     -> CANCELED: Twitch gives the points back
--   otherwise (refunds off, a grant that may have been applied,
--   a grant gone from the ledger)                                   -> KEPT: Twitch is told nothing
-- A CANCELED redemption marks its grants "refunded": a replay refuses them (lua/transition.lua
-- unless_flagged), so the viewer never gets both the points and the items. FULFILLED and CANCELED go on the
-- calls schedule, due now; KEPT is done at once, with a history entry on each grant saying why.
--
-- ARGV[1]  prefix   ARGV[2]  most grant ids to take from watched_moves (times: Redis' own clock)
--
-- Returns a flat list {redemption id, fate, ...} of the redemptions decided in this call.
-- include: keys

local p, limit = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000)
local decided = {}
local ids = redis.call('ZRANGE', K.watched_moves(p), 0, limit - 1)

local function note(grant_ids, reason)
  for _, id in ipairs(grant_ids) do
    local state = redis.call('HGET', K.grant(p, id), 'state')
    if state then
      redis.call('RPUSH', K.history(p, id),
        cjson.encode({at = tonumber(now), from = state, to = state, reason = reason}))
    end
  end
end

for _, grant_id in ipairs(ids) do
  redis.call('ZREM', K.watched_moves(p), grant_id)
  local rid = redis.call('HGET', K.grant(p, grant_id), 'redemption')
  local key = rid and K.twitch_redemption(p, rid)
  if key and redis.call('HGET', key, 'status') == 'waiting' then
    local grants = redis.call('SMEMBERS', K.twitch_redemption_grants(p, rid))
    table.sort(grants)
    local delivered, open, unsure = 0, 0, 0
    for _, id in ipairs(grants) do
      local g = redis.call('HMGET', K.grant(p, id), 'state', 'possible_duplicates', 'maybe_applied', 'verify')
      local state = g[1]
      if not state then
        unsure = unsure + 1
      elseif state == 'delivered' then
        delivered = delivered + 1
      elseif state == 'dead' or state == 'cancelled' then
        if tonumber(g[2] or '0') > 0 or g[3] == '1' or g[4] == '1' then unsure = unsure + 1 end
      else
        open = open + 1
      end
    end
    if open == 0 then
      local fate, why
      if delivered > 0 then
        fate = 'FULFILLED'
      elseif unsure > 0 then
        fate, why = 'KEPT', 'a grant of it may have been applied'
      elseif redis.call('HGET', key, 'refund') ~= '1' then
        fate, why = 'KEPT', 'refunds are off for its rule'
      else
        fate = 'CANCELED'
        for _, id in ipairs(grants) do redis.call('HSET', K.grant(p, id), 'refunded', '1') end
      end
      redis.call('HSET', key, 'fate', fate, 'decided_at', now)
      if fate == 'KEPT' then
        redis.call('HSET', key, 'status', 'done', 'note', why, 'done_at', now)
        note(grants, 'Twitch: redemption ' .. rid .. ' left unfulfilled in the reward queue: ' .. why)
      else
        redis.call('HSET', key, 'status', 'calling')
        redis.call('ZADD', K.twitch_redemption_calls(p), tonumber(now), rid)
      end
      decided[#decided + 1] = rid
      decided[#decided + 1] = fate
    end
  end
end
return decided
