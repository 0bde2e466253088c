-- Release every parked grant of one external identity to a Discord user, atomically and once.
--
-- KEYS[1]  parked index  <p>:parked:<platform>:<external id>  SET of grant ids
-- KEYS[2]  schedule      <p>:due                              ZSET grant id -> ms (Redis clock)
-- ARGV[1]  key prefix "<p>"; the script touches <p>:grant:<id>, <p>:grant:<id>:history and
--          <p>:state:parked / <p>:state:queued (one Redis instance, not a cluster)
-- ARGV[2]  Discord user id
-- ARGV[3]  now (epoch seconds, float)
-- ARGV[4]  history entry (JSON)
--
-- Only grants still in state "parked" move (to "queued", with the user id set, due now: a worker's
-- reconciler dispatches them even if the caller dies next); each id leaves the index. Returns the
-- ids that moved.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local released = {}
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do
  local grant = ARGV[1] .. ':grant:' .. id
  if redis.call('HGET', grant, 'state') == 'parked' then
    redis.call('HSET', grant, 'state', 'queued', 'user_id', ARGV[2], 'updated_at', ARGV[3])
    redis.call('RPUSH', grant .. ':history', ARGV[4])
    redis.call('ZREM', ARGV[1] .. ':state:parked', id)
    redis.call('ZADD', ARGV[1] .. ':state:queued', ARGV[3], id)
    redis.call('ZADD', KEYS[2], now_ms, id)
    released[#released + 1] = id
  end
  redis.call('SREM', KEYS[1], id)
end
return released
