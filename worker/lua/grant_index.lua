-- The ledger's secondary indexes (worker/grant_index.py says what reads them), included by every script
-- that creates, moves or deletes grants, so the indexes change in the same atomic step as the grant:
--   <p>:by-guild:<guild>          ZSET id -> creation time
--   <p>:by-guild:<guild>:<state>  ZSET id -> time it entered the state (the guild's share of <p>:state:<state>)
--   <p>:by-source:<source>        ZSET id -> creation time
--   <p>:find:<term>               ZSET id -> creation time, one per search term
--   <p>:grant:<id>:terms          STRING: the grant's terms, "\n"-separated, so a trim can remove them (a key of
--                                 its own: in the grant's hash this long value would cost the hash its compact
--                                 encoding and more than double its memory)
--   <p>:guilds, <p>:sources       SETs of the guild ids and the sources that have (or had) grants
-- The grant's "indexed" field says it is in all of them (worker/grant_index.py backfills older grants).
-- include: keys
-- include: moving_states

local function gi_add_term(p, id, term, created)
  redis.call('ZADD', K.find(p, term), created, id)
  local key = K.grant_terms(p, id)
  local terms = redis.call('GET', key) or ''
  for known in string.gmatch(terms, '[^\n]+') do
    if known == term then return end
  end
  if terms == '' then terms = term else terms = terms .. '\n' .. term end
  redis.call('SET', key, terms)
end

local function gi_created(p, id, guild, source, state, created, entered, terms)
  redis.call('ZADD', K.guild_grants(p, guild), created, id)
  redis.call('ZADD', K.guild_state(p, guild, state), entered, id)
  redis.call('ZADD', K.source_grants(p, source), created, id)
  redis.call('SADD', K.guilds(p), guild)
  redis.call('SADD', K.sources(p), source)
  for _, term in ipairs(terms) do gi_add_term(p, id, term, created) end
  redis.call('HSET', K.grant(p, id), 'indexed', '1')
end

local function gi_moved(p, id, guild, from, to, at)
  redis.call('ZREM', K.guild_state(p, guild, from), id)
  redis.call('ZADD', K.guild_state(p, guild, to), at, id)
  -- A grant whose fate someone outside the ledger waits for (a Twitch redemption) says so when it stops
  -- moving, in this same step (worker/keys.py, watched_moves).
  if not MOVING_STATES[to] and redis.call('HGET', K.grant(p, id), 'watched') == '1' then
    redis.call('ZADD', K.watched_moves(p), at, id)
  end
end

-- A grant whose hash is gone (deleted by hand, a partial restore): its fields cannot say where it is
-- indexed, so look in every guild's and source's index (a few sets) for its entries.
local function gi_orphaned(p, id)
  for _, guild in ipairs(redis.call('SMEMBERS', K.guilds(p))) do
    redis.call('ZREM', K.guild_grants(p, guild), id)
    for _, state in ipairs({'queued', 'sending', 'retrying', 'parked', 'delivered', 'unknown', 'dead', 'cancelled'}) do
      redis.call('ZREM', K.guild_state(p, guild, state), id)
    end
  end
  for _, source in ipairs(redis.call('SMEMBERS', K.sources(p))) do
    redis.call('ZREM', K.source_grants(p, source), id)
  end
end

-- Call before the grant's hash is deleted: its fields name the index entries to remove.
local function gi_deleted(p, id)
  local f = redis.call('HMGET', K.grant(p, id), 'guild_id', 'source', 'state')
  f[4] = redis.call('GET', K.grant_terms(p, id))
  if f[1] then
    redis.call('ZREM', K.guild_grants(p, f[1]), id)
    if f[3] then redis.call('ZREM', K.guild_state(p, f[1], f[3]), id) end
  end
  if f[2] then redis.call('ZREM', K.source_grants(p, f[2]), id) end
  if f[4] then
    for term in string.gmatch(f[4], '[^\n]+') do redis.call('ZREM', K.find(p, term), id) end
    redis.call('DEL', K.grant_terms(p, id))
  end
end
