-- One page of a grant search (worker/grant_search.py): walk one index newest first from a cursor and keep
-- the grants that pass the filters, looking at no more than a budget of entries.
--
-- ARGV[1]  JSON {prefix, index, limit, budget, state, source, guild, after_score, after_id}
--          index: the ZSET walked (the smallest that covers the filters, chosen by the caller);
--          state/source/guild: "" or the value the grant's field must have; after_score/after_id: ""
--          or the last entry of the previous page (the walk starts just below it)
--
-- Returns {ids..., "", next_score, next_id, done}: the matching ids in index order, then where the next
-- page starts ("" when the index is exhausted) and "1" when the whole index was walked.
-- include: keys
local req = cjson.decode(ARGV[1])
local p = req.prefix
local chunk = 200
local top = '+inf'
local after = nil
if req.after_score ~= '' then
  top = req.after_score
  after = tonumber(req.after_score)
end
local found, looked, offset = {}, 0, 0
local last_score, last_id = '', ''
local done = '0'
while #found < req.limit and looked < req.budget do
  local batch = redis.call('ZREVRANGEBYSCORE', req.index, top, '-inf', 'WITHSCORES', 'LIMIT', offset, chunk)
  if #batch == 0 then
    done = '1'
    break
  end
  offset = offset + #batch / 2
  for i = 1, #batch, 2 do
    local id, score = batch[i], batch[i + 1]
    -- Ties come in descending id order: those at or above the cursor's id were on earlier pages.
    if not (after and tonumber(score) == after and id >= req.after_id) then
      looked = looked + 1
      last_score, last_id = score, id
      local f = redis.call('HMGET', K.grant(p, id), 'state', 'source', 'guild_id')
      if f[1] and (req.state == '' or f[1] == req.state) and (req.source == '' or f[2] == req.source)
          and (req.guild == '' or f[3] == req.guild) then
        found[#found + 1] = id
        if #found >= req.limit then break end
      end
      if looked >= req.budget then break end
    end
  end
end
if done == '0' and #found < req.limit and looked < req.budget then done = '1' end
found[#found + 1] = ''
found[#found + 1] = last_score
found[#found + 1] = last_id
found[#found + 1] = done
return found
