-- take: ARGV = prefix, now, max, lease until. Jobs available now (queued and due, or leased
-- with the lease run out), by priority then time. Returns one array per job:
-- {hex, job id, lease token, request, priority, attempt, created at, run at, redelivered}.
local now, max, lease_until = num(ARGV[2]), num(ARGV[3]), num(ARGV[4])
local picked = redis.call('ZRANGEBYSCORE', JOBS, '-inf', now, 'LIMIT', 0, max)
if #picked < max then
  for _, hex in ipairs(redis.call('ZRANGEBYSCORE', JOBS, BAND, BAND + now, 'LIMIT', 0, max - #picked)) do
    picked[#picked + 1] = hex
  end
end
local out = {}
for _, hex in ipairs(picked) do
  local e = ekey(hex)
  local f = redis.call('HMGET', e, 'p', 'j', 'rq', 'pr', 'at', 'ca', 'ra', 'lt')
  if f[1] == '1' then
    local attempt = num(f[5]) + 1
    -- A job's first lease token is its id (unique, from the id counter); a redelivery or
    -- a retry draws a new one.
    local token = f[2]
    if attempt > 1 then token = version() end
    redis.call('HSET', e, 'lt', token, 'lu', lease_until, 'at', attempt)
    redis.call('ZADD', JOBS, num(f[4]) * BAND + lease_until, hex)
    -- A lease token still there means a lapsed lease (a retry clears it).
    local redelivered = 0
    if f[8] then redelivered = 1 end
    out[#out + 1] = {hex, f[2], token, f[3], f[4], attempt, f[6], f[7], redelivered}
  else
    -- Not a job any more (cannot happen through errand; tolerate a hand-edited store).
    redis.call('ZREM', JOBS, hex)
  end
end
return out
