-- Change one link (a platform user id -> a Discord user id) in one atomic step, keeping who made it.
--
-- ARGV[1] key prefix <p> (one Redis instance, not a cluster); ARGV[2] platform; ARGV[3] external id;
-- ARGV[4] mode; ARGV[5] Discord id (modes "operator" and "self"); ARGV[6] the rewards file's link of the
-- external id, "" if none (mode "self"); ARGV[7] most self-made links one Discord id may take (mode "self").
--
-- Storage: <p>:links:<platform> is a HASH external id -> Discord id holding every run-time link (what
-- create_grants.lua and release_parked.lua read); <p>:self-links:<platform>:<discord id> is a SET of the
-- external ids a redemption (a viewer, for themselves) linked to that Discord id. A link is self-made
-- when its external id is in the set of the Discord id it names. Links stored before these sets existed
-- are in none, so they count as operator links.
--
-- mode "operator" (POST /links, the CLI, a Patreon payload): link or re-link, whoever made the old link;
--   from now on it is an operator's. Returns "linked".
-- mode "self" (a link reward): link only when the user has no link yet (run-time, else the rewards file's)
--   and the Discord id has fewer than ARGV[7] self-made links. Returns "linked"; "already" when that very
--   link exists; or the refusal: "static" (the rewards file links the user elsewhere), "operator" (an
--   operator linked them elsewhere), "self-made" (a redemption linked them elsewhere: only an operator
--   moves it), "full" (the Discord id has its ARGV[7] self-made links).
-- mode "remove": forget the run-time link. Returns "removed", or "none" when there was none.
-- Run twice (a resent EVALSHA), each mode ends where one run would: "linked" then "already", and so on.
-- include: keys
local p, platform, ext, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local links = K.links(p, platform)
local function self_made(discord) return K.self_links(p, platform, discord) end

local current = redis.call('HGET', links, ext)
if mode == 'remove' then
  if not current then return 'none' end
  redis.call('SREM', self_made(current), ext)
  redis.call('HDEL', links, ext)
  return 'removed'
end

local discord = ARGV[5]
if mode == 'operator' then
  if current then redis.call('SREM', self_made(current), ext) end
  redis.call('HSET', links, ext, discord)
  return 'linked'
end
if mode ~= 'self' then return redis.error_reply('set_link: unknown mode ' .. mode) end

if current then
  if current == discord then return 'already' end
  if redis.call('SISMEMBER', self_made(current), ext) == 1 then return 'self-made' end
  return 'operator'
end
local static = ARGV[6]
if static ~= '' then
  if static == discord then return 'already' end
  return 'static'
end
if redis.call('SCARD', self_made(discord)) >= tonumber(ARGV[7]) then return 'full' end
redis.call('HSET', links, ext, discord)
redis.call('SADD', self_made(discord), ext)
return 'linked'
