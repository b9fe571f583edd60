-- list: ARGV = prefix, now, cursor ('' for the first page), limit, state ('' for any),
-- budget. Walks at most `budget` index records from the cursor (by URI, then key) and
-- returns {keys of up to `limit` live entries in that state, next cursor or ''}. The state
-- rules are those of stats.lua.
local now, cursor, limit, want, budget =
  num(ARGV[2]), ARGV[3], num(ARGV[4]), ARGV[5], num(ARGV[6])
local from = '-'
if cursor ~= '' then from = '(' .. cursor end
local members = redis.call('ZRANGEBYLEX', URIS, from, '+', 'LIMIT', 0, budget)
local found = {}
for i, member in ipairs(members) do
  local hex = string.match(member, '\n(%x+)$')
  local f = redis.call('HMGET', ekey(hex), 'p', 'x', 'vk', 'vu', 'cf')
  local state
  if f[1] == '1' then
    state = 'pending'
  elseif f[1] and num(f[2]) > now then
    if f[3] == '2' and num(f[4]) > now then
      state = 'pass'
    elseif f[3] == '1' and num(f[4]) > now then
      state = 'failed'
    elseif num(f[5]) > now then
      state = 'fresh'
    else
      state = 'stale'
    end
  end
  if state and (want == '' or want == state) then
    found[#found + 1] = hex
    if #found >= limit then
      if i < #members or #members == budget then return {found, member} end
      return {found, ''}
    end
  end
end
if #members == budget then return {found, members[#members]} end
return {found, ''}
