-- Delete one batch of old final grants of one state, atomically (worker/retention.py says which and why).
--
-- ARGV[1]  key prefix "<p>"; the script touches <p>:state:<state>, <p>:grants, <p>:due,
--          <p>:grant:<id>, <p>:grant:<id>:history, <p>:idem:<key>, <p>:parked:<platform>:<external id>,
--          <p>:parked-key:<guild>
--          and the secondary indexes (lua/grant_index.lua); one Redis instance, not a cluster
-- ARGV[2]  state whose index is walked ("delivered" or "cancelled")
-- ARGV[3]  cutoff: only entries that entered the state at or before this time (epoch seconds) go
-- ARGV[4]  offset into the old entries: how many this run has already kept (they stay at the front)
-- ARGV[5]  batch size
--
-- Per grant of the batch:
--   * its hash is gone (deleted by hand, or an earlier run got there first): its index entries go;
--   * its hash names another state (the index is stale) or its idempotency claim still lives and
--     names it: it is KEPT, so a repeated event still finds the grant its key names (creation
--     answers MissingGrant for a claim without a grant);
--   * otherwise the hash and history are deleted and the id leaves the state index, the all-grants
--     index, the schedule and its parked set (a grant cancelled while parked stays listed there).
-- Running it twice (redis-py may resend an EVALSHA whose answer was lost) trims nothing more than
-- the first run would have: every step is a delete of what may already be gone.
--
-- Returns {examined, trimmed, kept}.
-- include: keys
-- include: grant_index

local p = ARGV[1]
local state = ARGV[2]
local index = K.state_index(p, state)
local ids = redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[3], 'LIMIT', tonumber(ARGV[4]), tonumber(ARGV[5]))
local trimmed, kept = 0, 0
for _, id in ipairs(ids) do
  local grant = K.grant(p, id)
  local f = redis.call('HMGET', grant, 'state', 'idempotency_key', 'platform', 'external_id', 'guild_id')
  if not f[1] then
    gi_deleted(p, id)
    gi_orphaned(p, id)
    redis.call('ZREM', index, id)
    redis.call('ZREM', K.all_grants(p), id)
  elseif f[1] ~= state or (f[2] and redis.call('GET', K.idempotency(p, f[2])) == id) then
    kept = kept + 1
  else
    gi_deleted(p, id)
    redis.call('DEL', grant, K.history(p, id))
    redis.call('ZREM', index, id)
    redis.call('ZREM', K.all_grants(p), id)
    redis.call('ZREM', K.due(p), id)
    if f[3] and f[3] ~= '' and f[4] and f[4] ~= '' then
      redis.call('SREM', K.parked(p, f[3], f[4]), id)
    end
    -- and from its guild's parked-for-a-key set (a grant cancelled while it waited for an API key)
    if f[5] then redis.call('SREM', K.parked_for_key(p, f[5]), id) end
    trimmed = trimmed + 1
  end
end
return {#ids, trimmed, kept}
