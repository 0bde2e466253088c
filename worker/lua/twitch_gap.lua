-- Record a period for which Twitch events may have been missed, and ask the Twitch process to catch up.
--
-- KEYS[1]  the missed periods ZSET (member: JSON {"reason", "since", "until"}, score: until)
-- KEYS[2]  the "gap requested" flag (STRING)
-- ARGV[1]  the member JSON
-- ARGV[2]  its score (until, epoch seconds)
-- ARGV[3]  how many periods are kept (the newest)
-- Returns 1. Running it twice with the same member records it once.
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('SET', KEYS[2], ARGV[2])
return 1
