-- Writing a Dramatiq message onto a queue, as Dramatiq's Redis broker does (its dispatch script, command
-- "enqueue": the message under its id in the queue's ".msgs" hash, its id at the tail of the queue's list),
-- inside the step of a script of ours; tests/worker/test_script_parts.py compares the two. Then one wake
-- token per message written (worker.pickup), at most wake_max kept.

-- queue: the queue's full name "<namespace>:<queue name>".
local function enqueue_message(queue, message_id, message)
  redis.call('HSET', queue .. '.msgs', message_id, message)
  redis.call('RPUSH', queue, message_id)
end

-- wake: the queue's wake list (worker.keys.wake_key); written: how many messages this step wrote.
local function wake_consumers(wake, written, wake_max)
  if written > 0 then
    local tokens = {}
    for i = 1, math.min(written, wake_max) do tokens[i] = '1' end
    redis.call('LPUSH', wake, unpack(tokens))
    redis.call('LTRIM', wake, 0, wake_max - 1)
  end
end
