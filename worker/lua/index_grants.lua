-- Put grants written before the secondary indexes existed into them (worker/grant_index.py backfill).
--
-- ARGV[1]  key prefix "<p>"; the script touches <p>:grant:<id>, <p>:state:<state> (read) and the
--          secondary indexes (lua/grant_index.lua); one Redis instance, not a cluster
-- ARGV[2]  JSON list of {id, terms}: the grants and their search terms (worked out by the caller)
--
-- A grant already indexed (field "indexed") or gone is skipped, so a second run changes nothing.
-- Returns how many grants it indexed.
-- include: keys
-- include: grant_index

local p = ARGV[1]
local done = 0
for _, g in ipairs(cjson.decode(ARGV[2])) do
  local key = K.grant(p, g.id)
  local f = redis.call('HMGET', key, 'indexed', 'guild_id', 'source', 'state', 'created_at')
  if not f[1] and f[2] and f[3] and f[4] and f[5] then
    local entered = redis.call('ZSCORE', K.state_index(p, f[4]), g.id) or f[5]
    gi_created(p, g.id, f[2], f[3], f[4], f[5], entered, g.terms)
    done = done + 1
  end
end
return done
