-- Write a new sealed token pair and the connection's state in one step, only over the version the writer
-- read (compare-and-set): two writers can never leave one's access token beside the other's refresh token,
-- and a writer that read an older pair cannot overwrite a newer one.
--
-- KEYS[1]  the tokens hash (Keys.twitch_tokens), KEYS[2] the state hash (Keys.twitch_auth_state)
-- ARGV[1]  the version read ('' for none stored), ARGV[2] the new version, ARGV[3] the sealed pair
-- ARGV[4]  the state as JSON: field -> text; the state hash is replaced by it
-- Returns 1 when written (or already written by this very call: a resent EVALSHA), else 0.
local current = redis.call('HGET', KEYS[1], 'version') or ''
if current ~= ARGV[1] then
  if current == ARGV[2] and redis.call('HGET', KEYS[1], 'sealed') == ARGV[3] then
    return 1
  end
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'sealed', ARGV[3])
redis.call('DEL', KEYS[2])
local fields = {}
for name, value in pairs(cjson.decode(ARGV[4])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
if #fields > 0 then
  redis.call('HSET', KEYS[2], unpack(fields))
end
return 1
