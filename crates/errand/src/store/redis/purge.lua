-- purge: ARGV = prefix, now, soft ('1'/'0'), mode, target, cursor, limit.
-- mode 'k': target is one key (hex). mode 'l': every entry whose "uri\nhex" index member
-- starts with target, in pages of `limit` after `cursor` ('' for the first page).
-- mode 't': members of the tag set `target`, in SSCAN pages from `cursor` ('0' first).
-- Returns {affected, next cursor or ''}. A hard purge removes settled entries and the stale
-- copy of a pending one (never the job); a soft purge makes fresh content stale now,
-- keeping the lengths of its stale windows. Either way a running job is fenced: it may have
-- read what the write being invalidated replaced, so its lease is revoked (its completion
-- will be refused) and it is ready again now, as if never taken.
local now, soft, mode, target, cursor, limit =
  num(ARGV[2]), ARGV[3] == '1', ARGV[4], ARGV[5], ARGV[6], num(ARGV[7])
local requeued = 0

-- The attempt count stays: the next take is a new attempt and draws a new lease token (a
-- first attempt's token is the job id, which the fenced worker holds).
local function fence(hex, e, prio)
  redis.call('HDEL', e, 'lt', 'lu')
  redis.call('HSET', e, 'v', version())
  redis.call('ZADD', JOBS, num(prio) * BAND + now, hex)
  requeued = requeued + 1
end

local function purge_one(hex)
  local e = ekey(hex)
  local f = redis.call('HMGET', e, 'p', 'cs', 'cf', 'cst', 'csi', 'vu', 'lt', 'pr')
  if not f[1] then
    -- Gone by its TTL while no pruner ran: drop what still points at it.
    forget(hex)
    return 0
  end
  local fenced = 0
  if f[1] == '1' and f[7] then
    fence(hex, e, f[8])
    fenced = 1
  end
  if soft then
    if not f[2] or num(f[3]) <= now then return fenced end
    local cf = num(f[3])
    local st, sie = now + (num(f[4]) - cf), now + (num(f[5]) - cf)
    redis.call('HSET', e, 'cf', now, 'cst', st, 'csi', sie, 'v', version())
    if f[1] == '0' then
      local x = math.max(st, sie, num(f[6]))
      redis.call('HSET', e, 'x', x)
      expire_at(hex, x, now)
    end
    return 1
  end
  if f[1] == '1' then
    if not f[2] then return fenced end
    untag(hex)
    redis.call('HDEL', e, 'cs', 'ch', 'cb', 'cg', 'cf', 'cst', 'csi', 'cj', 'tg')
    redis.call('HSET', e, 'v', version())
    return 1
  end
  forget(hex)
  return 1
end

-- Workers of every process hear of the jobs made ready again.
local function done(n, next_cursor)
  if requeued > 0 then redis.call('PUBLISH', P .. 'ch:jobs', '') end
  return {n, next_cursor}
end

local n = 0
if mode == 'k' then
  return done(purge_one(target), '')
elseif mode == 't' then
  local page = redis.call('SSCAN', P .. 'tag:' .. target, cursor, 'COUNT', limit)
  for _, hex in ipairs(page[2]) do n = n + purge_one(hex) end
  if page[1] == '0' then return done(n, '') end
  return done(n, page[1])
end
local from = '[' .. target
if cursor ~= '' then from = '(' .. cursor end
local members = redis.call('ZRANGEBYLEX', URIS, from, '[' .. target .. '\255', 'LIMIT', 0, limit)
for _, member in ipairs(members) do
  n = n + purge_one(string.match(member, '\n(%x+)$'))
end
if #members < limit then return done(n, '') end
return done(n, members[#members])
