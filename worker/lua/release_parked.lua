-- Release every grant of one parked index, atomically and once: the grants of an external identity
-- once it is linked to a Discord user, or the grants of a guild that had no API key once it has one.
--
-- KEYS[1]  parked index  <p>:parked:<platform>:<external id> or <p>:parked-key:<guild>  SET of ids
-- KEYS[2]  schedule      <p>:due                              ZSET grant id -> ms (Redis clock)
-- ARGV[1]  key prefix "<p>"; the script touches <p>:grant:<id>, <p>:grant:<id>:history and
--          <p>:state:parked / <p>:state:queued and the secondary indexes (lua/grant_index.lua; the
--          Discord user id becomes a search term); one Redis instance, not a cluster
-- ARGV[2]  Discord user id to set on each grant, or "" to keep the grant's own
-- ARGV[3]  now (epoch seconds, float)
-- ARGV[4]  history entry (JSON)
-- KEYS[3], ARGV[5]  optional: a registry SET of parked indexes and this index's name in it, removed
--          once the index is empty
--
-- Only grants still in state "parked" move (to "queued", with the user id set if given, due now: a worker's
-- reconciler dispatches them even if the caller dies next); each id leaves the index. Returns the
-- ids that moved.
-- include: keys
-- include: grant_index

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local released = {}
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do
  local grant = K.grant(ARGV[1], id)
  if redis.call('HGET', grant, 'state') == 'parked' then
    redis.call('HSET', grant, 'state', 'queued', 'updated_at', ARGV[3])
    if ARGV[2] ~= '' then redis.call('HSET', grant, 'user_id', ARGV[2]) end
    redis.call('RPUSH', K.history(ARGV[1], id), ARGV[4])
    redis.call('ZREM', K.state_index(ARGV[1], 'parked'), id)
    redis.call('ZADD', K.state_index(ARGV[1], 'queued'), ARGV[3], id)
    redis.call('ZADD', KEYS[2], now_ms, id)
    local g = redis.call('HMGET', grant, 'guild_id', 'user_id', 'created_at')
    redis.call('SADD', K.pending(ARGV[1], g[1], g[2]), id)
    gi_moved(ARGV[1], id, g[1], 'parked', 'queued', ARGV[3])
    if ARGV[2] ~= '' then gi_add_term(ARGV[1], id, ARGV[2], g[3] or ARGV[3]) end
    released[#released + 1] = id
  end
  redis.call('SREM', KEYS[1], id)
end
if KEYS[3] and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[5])
end
return released
