-- Take one request slot for an API key: at most ARGV[1] request starts in any
-- window of ARGV[2] microseconds, measured on Redis' own clock so that every
-- worker on every host agrees.
--
-- KEYS[1]  window   <p>:rate:<key id>          ZSET member -> start time (us)
-- KEYS[2]  block    <p>:rate:<key id>:blocked  STRING time (us) before which nothing may start (after a 429)
-- ARGV[1]  limit (requests per window)
-- ARGV[2]  window (microseconds)
-- ARGV[3]  unique member for this request
-- ARGV[4]  now (microseconds) for tests; "" = Redis TIME
--
-- Returns {1, 0} when a slot was taken, {0, wait_us} when the caller must wait
-- that long before asking again.
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- A resent script (redis-py retries after a timeout) finds its own slot: it is this caller's already.
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return {1, 0}
end
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local blocked_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked_until > now then
  return {0, blocked_until - now}
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  -- Two extra minutes: a slot is re-stamped when its answer comes back (at most a timeout later).
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 120000)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
