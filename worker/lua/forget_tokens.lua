-- Forget the broadcaster's tokens (a disconnect), only if they are still the version the caller revoked:
-- a pair refreshed meanwhile is not dropped unrevoked. The version number is kept, so the next connection
-- writes a higher one and a refresher that read the forgotten pair can never write over it.
--
-- KEYS[1]  the tokens hash (Keys.twitch_tokens), KEYS[2] the state hash (Keys.twitch_auth_state)
-- ARGV[1]  the version the caller read and revoked
-- Returns 1 when forgotten (or nothing was stored any more), 0 when another version is stored now.
local current = redis.call('HGET', KEYS[1], 'version') or ''
if redis.call('HEXISTS', KEYS[1], 'sealed') == 0 then
  redis.call('DEL', KEYS[2])
  return 1
end
if current ~= ARGV[1] then
  return 0
end
redis.call('HDEL', KEYS[1], 'sealed')
redis.call('DEL', KEYS[2])
return 1
