-- Release a lock only if it is still ours: a holder that outlived its PX must not delete the lock a
-- newer holder took meanwhile.
--
-- KEYS[1]  the lock
-- ARGV[1]  the token the holder set it to
-- Returns 1 when it was ours and is gone, else 0. Safe to run twice (the second finds it gone).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
