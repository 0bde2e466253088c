-- Create a grant once per idempotency key, atomically.
--
-- KEYS[1]  idempotency claim   <p>:idem:<key>        STRING grant id
-- KEYS[2]  grant               <p>:grant:<id>        HASH
-- KEYS[3]  history             <p>:grant:<id>:history LIST
-- KEYS[4]  state index         <p>:state:<state>     ZSET
-- KEYS[5]  all grants          <p>:grants            ZSET
-- KEYS[6]  outbox              <p>:outbox            ZSET
-- KEYS[7]  parked index        <p>:parked:<platform>:<external id>  SET (used when ARGV[5] is "park")
-- ARGV[1]  grant id
-- ARGV[2]  claim TTL (seconds)
-- ARGV[3]  now (epoch seconds, float)
-- ARGV[4]  history entry (JSON)
-- ARGV[5]  "queue": put the grant in the outbox (it will be enqueued); "park": add it to the parked
--          index (it waits for a link); anything else: neither
-- ARGV[6..] field, value pairs for the grant hash
--
-- Returns {created (1/0), grant id, in outbox (1/0), the grant's hash as a flat field/value list}:
-- the new grant, or the one that already claimed the key (its hash key is KEYS[2] with the id
-- replaced; the service runs on one Redis instance, not a cluster). One round trip either way.
local existing = redis.call('GET', KEYS[1])
if existing then
  local grant_key = string.gsub(KEYS[2], '[^:]+$', existing, 1)
  local in_outbox = redis.call('ZSCORE', KEYS[6], existing) and 1 or 0
  return {0, existing, in_outbox, redis.call('HGETALL', grant_key)}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
local fields = {}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
if ARGV[5] == 'queue' then
  redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
elseif ARGV[5] == 'park' then
  redis.call('SADD', KEYS[7], ARGV[1])
end
return {1, ARGV[1], ARGV[5] == 'queue' and 1 or 0, fields}
