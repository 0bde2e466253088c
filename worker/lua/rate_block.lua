-- A 429's block of one API key, in one step so it never shortens a longer block set meanwhile (by another
-- worker's 429): no request for the key may start before the block's end (lua/sliding_window.lua).
--
-- KEYS[1]  block      STRING microsecond timestamp (Redis clock) before which no request may start
-- KEYS[2]  throttled  STRING "1" while the key counts as throttled (no slot is spare)
-- ARGV[1]  the block's length, microseconds from now
-- ARGV[2]  how long the key counts as throttled, ms (never shortened either)
-- ARGV[3]  how long the block key lives, ms (a little past its end)
--
-- Returns 1 when this block is now the key's block, 0 when a block as long or longer was in place.
local t = redis.call('TIME')
local until_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
end
local current = tonumber(redis.call('GET', KEYS[1]) or '')
if current and current >= until_us then
  return 0
end
redis.call('SET', KEYS[1], string.format('%.0f', until_us), 'PX', ARGV[3])
return 1
