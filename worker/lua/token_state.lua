-- Set fields of the Twitch connection's state, but only while the tokens are still the version the caller
-- acted on: a process that found an older pair refused must not mark a newer one revoked.
--
-- KEYS[1]  the tokens hash (Keys.twitch_tokens), KEYS[2] the state hash (Keys.twitch_auth_state)
-- ARGV[1]  the version acted on, ARGV[2] the fields as JSON: field -> text
-- Returns 1 when set, else 0. Safe to run twice (it sets the same values again).
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then
  return 0
end
local fields = {}
for name, value in pairs(cjson.decode(ARGV[2])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
if #fields > 0 then
  redis.call('HSET', KEYS[2], unpack(fields))
end
return 1
