-- Release every parked grant of one external identity to a Discord user, atomically and once.
--
-- KEYS[1]  parked index  <p>:parked:<platform>:<external id>  SET of grant ids
-- KEYS[2]  outbox        <p>:outbox                           ZSET
-- ARGV[1]  key prefix "<p>"; the script touches <p>:grant:<id>, <p>:grant:<id>:history and
--          <p>:state:parked / <p>:state:queued (one Redis instance, not a cluster)
-- ARGV[2]  Discord user id
-- ARGV[3]  now (epoch seconds, float)
-- ARGV[4]  history entry (JSON)
--
-- Only grants still in state "parked" move (to "queued", with the user id set
-- and an outbox marker so they are enqueued even if the caller dies); each id
-- leaves the index. Returns the ids that moved.
local released = {}
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do
  local grant = ARGV[1] .. ':grant:' .. id
  if redis.call('HGET', grant, 'state') == 'parked' then
    redis.call('HSET', grant, 'state', 'queued', 'user_id', ARGV[2], 'updated_at', ARGV[3])
    redis.call('RPUSH', grant .. ':history', ARGV[4])
    redis.call('ZREM', ARGV[1] .. ':state:parked', id)
    redis.call('ZADD', ARGV[1] .. ':state:queued', ARGV[3], id)
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    released[#released + 1] = id
  end
  redis.call('SREM', KEYS[1], id)
end
return released
