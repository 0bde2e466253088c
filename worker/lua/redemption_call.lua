-- The Helix status updates of decided Twitch redemptions (producers/twitch/redemptions.py), one atomic step
-- per call:
--   claim  ARGV[3] lease (s), ARGV[4] most: the redemptions whose update is due, each
--          claimed until now + lease (a caller that dies lets another take them then; Helix ignores a
--          repeat: it only moves UNFULFILLED redemptions). Returns {id, broadcaster_id, reward_id, fate, ...}.
--   done   ARGV[3] JSON {redemption id: {note, refunded}}: what Twitch now holds; the redemption is done and
--          each of its grants' histories says so. A CANCELED redemption whose refund did not happen
--          (refunded false: the reward is gone, another app's, or the streamer acted first) becomes KEPT and its
--          grants lose their "refunded" mark: nothing was given back, so a replay is fair again.
--   retry  ARGV[3] JSON {redemption id: error}, ARGV[4] delay (s): due again after the delay.
-- ARGV[1] is the key prefix, ARGV[2] the mode; times are Redis' own clock. "done" and "retry" skip a
-- redemption that is not "calling" (done already: a resent step changes nothing).
-- include: keys

local p, mode = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000)
local calls = K.twitch_redemption_calls(p)

if mode == 'claim' then
  local lease, most = tonumber(ARGV[3]), tonumber(ARGV[4])
  local out = {}
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', calls, '-inf', now, 'LIMIT', 0, most)) do
    local r = redis.call('HMGET', K.twitch_redemption(p, rid), 'status', 'broadcaster_id', 'reward_id', 'fate')
    if r[1] == 'calling' then
      redis.call('ZADD', calls, tonumber(now) + lease, rid)
      out[#out + 1] = rid
      out[#out + 1] = r[2]
      out[#out + 1] = r[3]
      out[#out + 1] = r[4]
    else
      redis.call('ZREM', calls, rid)
    end
  end
  return out
end

local changed = 0
for rid, told in pairs(cjson.decode(ARGV[3])) do
  local key = K.twitch_redemption(p, rid)
  if redis.call('HGET', key, 'status') == 'calling' then
    changed = changed + 1
    if mode == 'done' then
      local unrefunded = redis.call('HGET', key, 'fate') == 'CANCELED' and not told.refunded
      redis.call('HSET', key, 'status', 'done', 'note', told.note, 'done_at', now)
      if unrefunded then redis.call('HSET', key, 'fate', 'KEPT') end
      redis.call('ZREM', calls, rid)
      for _, id in ipairs(redis.call('SMEMBERS', K.twitch_redemption_grants(p, rid))) do
        local grant = K.grant(p, id)
        local state = redis.call('HGET', grant, 'state')
        if state then
          if unrefunded then redis.call('HDEL', grant, 'refunded') end
          redis.call('RPUSH', K.history(p, id),
            cjson.encode({at = tonumber(now), from = state, to = state, reason = 'Twitch: ' .. told.note}))
        end
      end
    else
      redis.call('HINCRBY', key, 'calls_failed', 1)
      redis.call('HSET', key, 'last_error', told)
      redis.call('ZADD', calls, tonumber(now) + tonumber(ARGV[4]), rid)
    end
  end
end
return changed
