-- claim: ARGV = prefix, hex, uri, priority, now, request, expected version or '', cap.
-- Returns {1, version, job id} when this call enqueued the job on a new entry,
-- {1, entry} when it enqueued on an existing one (a refresh keeps its content),
-- {0, entry} for someone else's entry, and {2, jobs} when the queue already holds `cap` jobs
-- (the flood cap; checked before any write, so a refused claim changes nothing).
local hex, uri, prio, now, req, expect = ARGV[2], ARGV[3], num(ARGV[4]), num(ARGV[5]), ARGV[6], ARGV[7]
local cap = num(ARGV[8])
local e = ekey(hex)
local cur = redis.call('HMGET', e, 'p', 'x', 'v', 'vk')
if cur[1] == '1' or (cur[1] and num(cur[2]) > now and cur[3] ~= expect) then
  return {0, redis.call('HGETALL', e)}
end
local queued = redis.call('ZCARD', JOBS)
if queued >= cap then return {2, queued} end
local after_failure = '0'
local existing = false
if cur[1] then
  if cur[1] == '1' then return {0, redis.call('HGETALL', e)} end
  if num(cur[2]) > now then
    if cur[3] ~= expect then return {0, redis.call('HGETALL', e)} end
    if cur[4] == '1' then after_failure = '1' end
    existing = true
    redis.call('HDEL', e, 'x', 'lt', 'lu', 'le', 'vk', 'vu', 'vs', 'vh', 'vb', 'vt', 'va', 'vat')
    redis.call('PERSIST', e)
    redis.call('ZREM', EXPIRY, hex)
  else
    forget(hex)
  end
end
local ids = redis.call('INCRBY', IDS, 2)
redis.call('HSET', e, 'u', uri, 'v', ids - 1, 'p', '1', 'j', ids, 'pr', prio, 'ca', now,
  'ra', now, 'at', 0, 'rq', req, 'af', after_failure)
redis.call('ZADD', JOBS, prio * BAND + now, hex)
redis.call('ZADD', URIS, 0, uri .. '\n' .. hex)
redis.call('PUBLISH', P .. 'ch:jobs', '')
if existing then return {1, redis.call('HGETALL', e)} end
return {1, ids - 1, ids}
