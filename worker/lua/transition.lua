-- Move a grant from one state to another, with its history entry and state index, atomically.
--
-- KEYS[1]  grant        <p>:grant:<id>          HASH
-- KEYS[2]  history      <p>:grant:<id>:history  LIST
-- ARGV[1]  state-index key prefix  "<p>:state:" (the script touches <p>:state:<old> and <p>:state:<new>;
--          the service runs on one Redis instance, not a cluster)
-- ARGV[2]  grant id
-- ARGV[3]  allowed current states, comma separated ("" = any)
-- ARGV[4]  new state
-- ARGV[5]  now (epoch seconds, float)
-- ARGV[6]  history entry (JSON) with "from" left as the placeholder "%FROM%"
-- ARGV[7]  how much to add to "attempts"
-- ARGV[8]  how much to add to "failures" ("reset" sets it to 0)
-- ARGV[9..] field, value pairs to set on the grant
--
-- Returns {1, old state} when moved, {0, current state or ""} when not.
local current = redis.call('HGET', KEYS[1], 'state')
if not current then
  return {0, ''}
end
if ARGV[3] ~= '' then
  local allowed = false
  for state in string.gmatch(ARGV[3], '([^,]+)') do
    if state == current then allowed = true end
  end
  if not allowed then
    return {0, current}
  end
end
local fields = {'state', ARGV[4], 'updated_at', ARGV[5]}
for i = 9, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
if tonumber(ARGV[7]) ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'attempts', tonumber(ARGV[7]))
end
if ARGV[8] == 'reset' then
  redis.call('HSET', KEYS[1], 'failures', 0)
elseif tonumber(ARGV[8]) ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'failures', tonumber(ARGV[8]))
end
local entry = string.gsub(ARGV[6], '%%FROM%%', current, 1)
redis.call('RPUSH', KEYS[2], entry)
redis.call('ZREM', ARGV[1] .. current, ARGV[2])
redis.call('ZADD', ARGV[1] .. ARGV[4], ARGV[5], ARGV[2])
return {1, current}
