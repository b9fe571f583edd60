-- stats: ARGV = prefix, now, cursor ('' for the first page), limit. Counts one page of
-- entries: {next cursor or '', fresh, stale, pending, failed, pass, bytes}; the first page
-- also carries the queue figures {ready, scheduled, running, oldest ready run_at or -1}.
local now, cursor, limit = num(ARGV[2]), ARGV[3], num(ARGV[4])
local from = '-'
if cursor ~= '' then from = '(' .. cursor end
local members = redis.call('ZRANGEBYLEX', URIS, from, '+', 'LIMIT', 0, limit)
local fresh, stale, pending, failed, pass, bytes = 0, 0, 0, 0, 0, 0
for _, member in ipairs(members) do
  local hex = string.match(member, '\n(%x+)$')
  local e = ekey(hex)
  local f = redis.call('HMGET', e, 'p', 'x', 'vk', 'vu', 'cf')
  if f[1] == '1' then
    pending = pending + 1
  elseif f[1] and num(f[2]) > now then
    if f[3] == '2' and num(f[4]) > now then
      pass = pass + 1
    elseif f[3] == '1' and num(f[4]) > now then
      failed = failed + 1
    elseif num(f[5]) > now then
      fresh = fresh + 1
    else
      stale = stale + 1
    end
    bytes = bytes + redis.call('HSTRLEN', e, 'cb') + redis.call('HSTRLEN', e, 'ch')
      + redis.call('HSTRLEN', e, 'vb') + #member + 160
  end
end
local next = ''
if #members == limit then next = members[#members] end
local out = {next, fresh, stale, pending, failed, pass, bytes}
if cursor == '' then
  -- Queue figures. Jobs not available now are either leased (running) or waiting for a
  -- retry's backoff (scheduled): told apart by their lease, one look per job in flight.
  local ready = redis.call('ZCOUNT', JOBS, '-inf', now) + redis.call('ZCOUNT', JOBS, BAND, BAND + now)
  local running, scheduled = 0, 0
  local later = redis.call('ZRANGEBYSCORE', JOBS, '(' .. now, '(' .. BAND)
  for _, hex in ipairs(redis.call('ZRANGEBYSCORE', JOBS, '(' .. (BAND + now), '+inf')) do
    later[#later + 1] = hex
  end
  for _, hex in ipairs(later) do
    if redis.call('HEXISTS', ekey(hex), 'lt') == 1 then
      running = running + 1
    else
      scheduled = scheduled + 1
    end
  end
  local oldest = -1
  local a = redis.call('ZRANGEBYSCORE', JOBS, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if a[2] then oldest = num(a[2]) end
  local b = redis.call('ZRANGEBYSCORE', JOBS, BAND, BAND + now, 'WITHSCORES', 'LIMIT', 0, 1)
  if b[2] and (oldest < 0 or num(b[2]) - BAND < oldest) then oldest = num(b[2]) - BAND end
  out[8], out[9], out[10], out[11] = ready, scheduled, running, oldest
end
return out
