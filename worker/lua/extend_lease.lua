-- Make a run's user lease last longer, if the run still holds it (a baseline read before its request).
--
-- KEYS[1]  lease  <p>:lease:<guild>:<user>  STRING "<grant id>:<run token>"
-- ARGV[1]  the value the run set, ARGV[2] milliseconds the lease lasts from now
--
-- Returns 1 when extended, 0 when the lease is no longer the run's (it must not send then). Safe to run twice.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
