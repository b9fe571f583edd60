-- complete: ARGV = prefix, now, then one record of 15 per job:
--   hex, job id, lease token, kind, status, headers, body, n1, n2, n3, n4, n5, text, n6, text2
-- kind 's' (store): n1..n5 = generated, fresh until, stale until, stale-if-error until,
--   job ms; text = tags separated by U+001F.
-- kind 'd' (deliver): as 's', and the same response kept for one delivery by a pass until
--   n6, text2 = its reason.
-- kind 'f' (fail): n1 = until, n2 = attempts, n3 = at; text = error.
-- kind 'p' (pass): n1 = until; status '' when no response is kept; text = reason.
-- kind 'r' (retry): n1 = run at; text = error.
-- Each job is fenced by its lease: returns 0 (lease lost) or, done, 1, or for a stored result
-- (and a failure already over) the entry's URI (so this process can hand waiters the settled
-- entry), per job; and publishes
-- the keys that settled in one message. The lease token becomes the entry's new version: it
-- comes from the same counter, so no version is ever reused.
local now = num(ARGV[2])
local results, settled = {}, {}
local i = 3
while i + 14 <= #ARGV do
  local hex, job, token, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local status, headers, body, text = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 12]
  local n1, n2, n3, n4, n5 = ARGV[i + 7], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10], ARGV[i + 11]
  local e = ekey(hex)
  local f = redis.call('HMGET', e, 'p', 'j', 'lt', 'pr', 'tg', 'u', 'vk')
  if f[1] ~= '1' or f[2] ~= job or f[3] ~= token then
    results[#results + 1] = 0
  elseif kind == 'r' then
    redis.call('HDEL', e, 'lt', 'lu')
    redis.call('HSET', e, 'ra', n1, 'le', text, 'v', version())
    redis.call('ZADD', JOBS, num(f[4]) * BAND + num(n1), hex)
    results[#results + 1] = 1
  else
    redis.call('ZREM', JOBS, hex)
    local x
    if kind == 's' or kind == 'd' then
      if f[5] then untag(hex) end
      if f[7] then
        redis.call('HDEL', e, 'vk', 'vu', 'vs', 'vh', 'vb', 'vt', 'va', 'vat')
      end
      x = math.max(num(n2), num(n3), num(n4))
      if kind == 'd' then
        local pass_until = ARGV[i + 13]
        x = math.max(x, num(pass_until))
        redis.call('HSET', e, 'vk', '2', 'vu', pass_until, 'vt', ARGV[i + 14],
          'vs', status, 'vh', headers, 'vb', body)
      end
      -- The job's fields stay behind (read only while pending) but its request is dropped;
      -- overwriting it here saves a separate HDEL on the hot path.
      redis.call('HSET', e, 'p', '0', 'at', 0, 'rq', '', 'le', '', 'v', token, 'x', x,
        'cs', status, 'ch', headers, 'cb', body, 'cg', n1, 'cf', n2, 'cst', n3, 'csi', n4,
        'cj', n5, 'tg', text)
      if text ~= '' then tag(hex, text) end
    elseif kind == 'f' then
      local c = redis.call('HMGET', e, 'cf', 'cst', 'csi')
      x = math.max(num(n1), num(c[1]), num(c[2]), num(c[3]))
      -- The request stays with the failure, so an operator can retry it.
      redis.call('HDEL', e, 'j', 'pr', 'ca', 'ra', 'lt', 'lu', 'le', 'af')
      redis.call('HSET', e, 'p', '0', 'at', 0, 'v', token, 'x', x, 'vk', '1', 'vu', n1,
        'vs', status, 'vh', headers, 'vb', body, 'va', n2, 'vat', n3, 'vt', text)
    else
      if f[5] then untag(hex) end
      x = num(n1)
      redis.call('HDEL', e, 'j', 'pr', 'ca', 'ra', 'lt', 'lu', 'le', 'rq', 'af',
        'cs', 'ch', 'cb', 'cg', 'cf', 'cst', 'csi', 'cj', 'tg', 'va', 'vat', 'vs', 'vh', 'vb')
      redis.call('HSET', e, 'p', '0', 'at', 0, 'v', token, 'x', x, 'vk', '2', 'vu', n1, 'vt', text)
      if status ~= '' then
        redis.call('HSET', e, 'vs', status, 'vh', headers, 'vb', body)
      end
    end
    redis.call('HSET', ikey(hex), 'u', f[6])
    expire_at(hex, x, now)
    settled[#settled + 1] = hex
    -- A stored result, or a failure over as it is stored (nothing left for a lookup): the
    -- URI, so this process hands its waiters the entry itself.
    if kind == 's' or kind == 'd' or (kind == 'f' and x <= now) then
      results[#results + 1] = f[6] or ''
    else
      results[#results + 1] = 1
    end
  end
  i = i + 15
end
if #settled > 0 then
  redis.call('PUBLISH', P .. 'ch:done', table.concat(settled, ','))
end
return results
