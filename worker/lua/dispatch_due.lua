-- The reconciler's step: give every grant whose schedule entry is due a fresh queue message, once.
--
-- KEYS[1]  schedule  <p>:due  ZSET grant id -> ms (Redis clock) when the grant is looked at next
-- ARGV[1]  JSON request:
--   prefix      key prefix <p> (the script reads <p>:grant:<id> and <p>:lease:<guild>:<user>)
--   queue       Dramatiq's queue list; its messages hash is queue .. ".msgs"
--   wake        the queue's wake list: one token per message written is LPUSHed, then LTRIMmed to wake_max
--   ttl_ms      how long a dispatched message may take to be claimed before it is dispatched again
--   write       1 = write the messages (the worker); 0 = only hand out tokens (tests drive the actor)
--   candidates  [{id, token, msg_id, body}] read as due just before; each is checked again here
--
-- A grant that is final, parked or gone leaves the schedule. A grant still "sending" whose lease is
-- held by a live run is pushed back to when that lease ends. Every other due grant gets a new
-- dispatch token (a message with an older token is a no-op when it runs). Returns {id, token} pairs.
local req = cjson.decode(ARGV[1])
local p = req.prefix
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local moving = {queued = true, retrying = true, sending = true}
local out = {}
local written = 0
for _, c in ipairs(req.candidates) do
  local score = redis.call('ZSCORE', KEYS[1], c.id)
  if score and tonumber(score) <= now_ms then
    local key = p .. ':grant:' .. c.id
    local g = redis.call('HMGET', key, 'state', 'guild_id', 'user_id')
    if not g[1] or not moving[g[1]] then
      redis.call('ZREM', KEYS[1], c.id)
      if g[1] then redis.call('HDEL', key, 'dispatch') end
    else
      local lease = p .. ':lease:' .. g[2] .. ':' .. g[3]
      local holder = redis.call('GET', lease)
      local mine = holder and string.sub(holder, 1, #c.id + 1) == c.id .. ':'
      if mine then
        redis.call('ZADD', KEYS[1], now_ms + math.max(redis.call('PTTL', lease), 0) + 1000, c.id)
      else
        if req.write == 1 then
          redis.call('HSET', req.queue .. '.msgs', c.msg_id, c.body)
          redis.call('RPUSH', req.queue, c.msg_id)
          written = written + 1
        end
        redis.call('HSET', key, 'dispatch', c.token)
        redis.call('ZADD', KEYS[1], now_ms + req.ttl_ms, c.id)
        out[#out + 1] = {c.id, c.token}
      end
    end
  end
end
if written > 0 then
  local tokens = {}
  for i = 1, math.min(written, req.wake_max) do tokens[i] = '1' end
  redis.call('LPUSH', req.wake, unpack(tokens))
  redis.call('LTRIM', req.wake, 0, req.wake_max - 1)
end
return out
