-- Replace a whole HASH in one step (readers never see it half written).
--
-- KEYS[1]  the hash
-- ARGV     field, value, field, value, ... (none: the hash is deleted)
-- Returns the number of fields written.
redis.call('DEL', KEYS[1])
if #ARGV > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return #ARGV / 2
