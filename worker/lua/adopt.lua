-- Put every grant of one moving state's index that has no schedule entry on the schedule, due now.
-- A safety net for grants written before the schedule existed (an upgrade) or by hand: the schedule
-- must hold every grant that should move.
--
-- KEYS[1]  state index  <p>:state:<state>  ZSET (state is queued, retrying or sending)
-- KEYS[2]  schedule     <p>:due            ZSET
-- ARGV[1]  key prefix <p> (the script reads <p>:grant:<id>); ARGV[2] the state; ARGV[3], ARGV[4]
--          the index range (start, stop) to look at
--
-- Returns the number of grants put on the schedule.
-- include: keys
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local adopted = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]))) do
  if not redis.call('ZSCORE', KEYS[2], id)
      and redis.call('HGET', K.grant(ARGV[1], id), 'state') == ARGV[2] then
    redis.call('ZADD', KEYS[2], now_ms, id)
    adopted = adopted + 1
  end
end
return adopted
