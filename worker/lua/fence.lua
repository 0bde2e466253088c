-- Replica confirmation of an earlier write (worker/replication.py): is that write on this primary?
-- The write set KEYS[1]'s field ARGV[1] to the fresh token ARGV[2]. If the token is still there, it is
-- written again, so the caller's WAIT (next in the same pipeline) counts the replicas that have everything
-- up to here, that write included; if not, this primary never had it (a failover lost it): nothing is
-- written and the answer is 0.
--
-- KEYS[1]  the hash the write touched
-- ARGV[1]  field, ARGV[2] token
-- Returns 1 when the write is here, else 0. Safe to run twice.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
