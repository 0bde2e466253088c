-- A run hands its grant back without a state change (a rate slot or a key pause to wait for):
-- the grant is due again after ARGV delay, and the run's lease ends.
--
-- KEYS[1]  grant     <p>:grant:<id>   HASH
-- KEYS[2]  schedule  <p>:due          ZSET
-- KEYS[3]  lease     <p>:lease:<g>:<u>
-- ARGV[1]  grant id; ARGV[2] the run's lease value; ARGV[3] delay (ms); ARGV[4] due time (ms, Redis' clock;
--          0 = now + delay): a rate-limit turn, kept whatever delayed the caller (no earlier than now)
--
-- Returns 1 when rescheduled, 0 when the grant is no longer moving (then it leaves the schedule). The grant
-- keeps its place in its guild's in-flight set (lua/inflight.lua): it waits for its turn, not settled yet.
-- include: moving_states
if redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('DEL', KEYS[3])
end
local state = redis.call('HGET', KEYS[1], 'state')
if not MOVING_STATES[state] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HDEL', KEYS[1], 'dispatch', 'dispatch_msg')
local due = now_ms + tonumber(ARGV[3])
local at = tonumber(ARGV[4] or '0')
if at > 0 then due = math.max(now_ms, at) end
redis.call('ZADD', KEYS[2], due, ARGV[1])
return 1
