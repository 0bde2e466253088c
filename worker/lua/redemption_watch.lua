-- Watch the grants one Twitch channel-point redemption made, so Twitch is told its fate once they have
-- one (producers/twitch/redemptions.py). Safe to run twice and from both paths that see a redemption (the
-- webhook and the catch-up poll): the redemption keeps its first broadcaster, reward and refund choice,
-- and its grants are a set.
--
-- ARGV[1]  JSON {prefix, id, broadcaster_id, reward_id, refund ("1" / "0"), grants: [grant id]}
-- (times: Redis' own clock)
--
-- Returns {status, added}: the redemption's status ("waiting", "calling", "done") and how many grants
-- joined it. A redemption decided already takes no more grants (added = 0): its fate is sealed.
-- include: keys
-- include: moving_states

local req = cjson.decode(ARGV[1])
local p = req.prefix
local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000)
local key = K.twitch_redemption(p, req.id)
redis.call('HSETNX', key, 'broadcaster_id', req.broadcaster_id)
redis.call('HSETNX', key, 'reward_id', req.reward_id)
redis.call('HSETNX', key, 'refund', req.refund)
redis.call('HSETNX', key, 'created_at', now)
redis.call('HSETNX', key, 'status', 'waiting')
local status = redis.call('HGET', key, 'status')
if status ~= 'waiting' then
  return {status, 0}
end
local added = 0
for _, id in ipairs(req.grants) do
  local grant = K.grant(p, id)
  local state = redis.call('HGET', grant, 'state')
  if state and redis.call('SADD', K.twitch_redemption_grants(p, req.id), id) == 1 then
    added = added + 1
    redis.call('HSET', grant, 'watched', '1', 'redemption', req.id)
    if not MOVING_STATES[state] then
      -- Its fate may be known already (a repeat of a delivered redemption, a catch-up after the fact).
      redis.call('ZADD', K.watched_moves(p), now, id)
    end
  end
end
return {status, added}
