-- Take one request slot for an API key: at most ARGV[1] requests counted in any window of ARGV[2]
-- microseconds, measured on Redis' own clock so that every worker on every host agrees.
--
-- KEYS[1]  window   <p>:rate:<key id>          ZSET member -> the time the slot counts from (us): its
--                                              start, re-stamped with its answer's time (lua/transition.lua)
-- KEYS[2]  block    <p>:rate:<key id>:blocked  STRING time (us) before which nothing may start (after a 429)
-- KEYS[3]  line     <p>:rate:<key id>:line     ZSET waiter -> its turn (us): when its slot frees
-- KEYS[4]  pending  <p>:rate:<key id>:pending  ZSET member -> the latest time (us) its request may still
--                                              reach WetBot, while its answer is not recorded
-- KEYS[5]  optional: the asking grant's hash; a refused grant records its line there ("line"), so the
--          step that takes it out of queued/retrying (cancelled, parked, dead) gives up its place
--          (lua/transition.lua)
-- ARGV[1]  limit (requests per window)
-- ARGV[2]  window (microseconds)
-- ARGV[3]  unique member for this request
-- ARGV[4]  the waiter asking (a grant id); "" = no line: wait for the next slot to free
-- ARGV[5]  grace (microseconds): how long after its turn a waiter keeps its place
-- ARGV[6]  hold (microseconds): how long after now the granted slot's request may still reach WetBot
--          unless its answer is recorded first (0: the slot counts one window from now, answered or not)
--
-- Returns {1, 0} when a slot was taken, {0, wait_us, now_us} when the caller must wait
-- that long before asking again: until now_us + wait_us on Redis' clock (a waiter's turn), which a
-- hand-back schedules as such, so a caller delayed after this answer does not push its turn back.
--
-- A slot leaves the window a window after the time it counts from, unless it is pending: its answer
-- is not recorded and its request may still arrive (a starved process, a slow connect, a worker that
-- died with the answer). Such a slot is moved up instead (to now, or to its pending deadline once that
-- is past), so it keeps counting until a window after the latest its request can reach WetBot; its
-- answer re-stamps it and ends the hold. Without this a request that reached WetBot more than the
-- margin after its slot was taken, and was not answered within the window, let another request in
-- while WetBot still counted it (worker/limiter.py).
--
-- The line spreads a backlog over the slots to come. A waiter refused a slot
-- gets the turn of the slot after every waiter ahead of it (all of them when it
-- is new, those with earlier turns when it comes back), so a key 1,000 grants
-- behind hands out its next 10 slots to 10 of them, not to whichever of the
-- 1,000 asks first. A waiter that never comes back (cancelled, its worker gone)
-- is dropped once its turn is ``grace`` old; until then it only makes the
-- waiters behind it ask one slot later than they could, and a slot that is
-- free goes to whoever asks, in line or not.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- A resent script (redis-py retries after a timeout) finds its own slot: it is this caller's already.
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return {1, 0}
end
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local waiter = ARGV[4]

local blocked_until = tonumber(redis.call('GET', KEYS[2]) or '0')
local hold = tonumber(ARGV[6]) or 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)) do
  local deadline = redis.call('ZSCORE', KEYS[4], member)
  if deadline and tonumber(deadline) > now - window then
    redis.call('ZADD', KEYS[1], math.min(now, tonumber(deadline)), member)
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if blocked_until <= now and count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  -- Two extra minutes past the hold: a slot is re-stamped when its answer comes back.
  local keep_ms = math.ceil((window + hold) / 1000) + 120000
  redis.call('PEXPIRE', KEYS[1], keep_ms)
  if hold > 0 then
    redis.call('ZADD', KEYS[4], now + hold, ARGV[3])
    redis.call('PEXPIRE', KEYS[4], keep_ms)
  end
  if waiter ~= '' then
    redis.call('ZREM', KEYS[3], waiter)
  end
  return {1, 0}
end

if waiter == '' then
  if blocked_until > now then
    return {0, blocked_until - now, now}
  end
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now, now}
end

local grace = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - grace)
local mine = redis.call('ZSCORE', KEYS[3], waiter)
local ahead
if mine then
  ahead = redis.call('ZCOUNT', KEYS[3], '-inf', '(' .. mine)
else
  ahead = redis.call('ZCARD', KEYS[3])
end
-- The key's slots in the order they free: slot j frees a window after the time it counts from (free
-- slots, during a 429 block, at the block's end); every later round of slots a window after that. A
-- pending slot older than a window was moved up to now above: it frees a window from now at the soonest.
local starts = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local held = #starts / 2
local earliest = math.max(now, blocked_until)
local j = (ahead % limit) + 1
local index = held - limit + j
local turn = earliest
if index >= 1 then
  turn = math.max(earliest, tonumber(starts[2 * index]) + window)
end
turn = turn + window * math.floor(ahead / limit)
redis.call('ZADD', KEYS[3], turn, waiter)
if KEYS[5] and redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('HSET', KEYS[5], 'line', KEYS[3])
end
local keep_ms = math.ceil((turn - now + grace) / 1000) + 1000
if redis.call('PTTL', KEYS[3]) < keep_ms then
  redis.call('PEXPIRE', KEYS[3], keep_ms)
end
return {0, turn - now, now}
