-- take: ARGV = prefix, now, max, lease until. Jobs whose lease ran out first (they were due
-- earliest), then ready jobs by priority and run time. Returns one array per job:
-- {hex, job id, lease token, request, priority, attempt, created at, run at}.
local now, max, lease_until = num(ARGV[2]), num(ARGV[3]), ARGV[4]
local picked = redis.call('ZRANGEBYSCORE', LEASED, '-inf', now, 'LIMIT', 0, max)
if #picked < max then
  for _, hex in ipairs(redis.call('ZRANGEBYSCORE', READY, '-inf', now, 'LIMIT', 0, max - #picked)) do
    picked[#picked + 1] = hex
  end
end
if #picked < max then
  for _, hex in ipairs(redis.call('ZRANGEBYSCORE', READY, BAND, BAND + now, 'LIMIT', 0, max - #picked)) do
    picked[#picked + 1] = hex
  end
end
local out = {}
if #picked == 0 then return out end
local first = redis.call('INCRBY', IDS, #picked) - #picked
for i, hex in ipairs(picked) do
  local e = ekey(hex)
  local f = redis.call('HMGET', e, 'p', 'j', 'rq', 'pr', 'at', 'ca', 'ra')
  redis.call('ZREM', READY, hex)
  if f[1] == '1' then
    local token = first + i
    local attempt = num(f[5]) + 1
    redis.call('HSET', e, 'lt', token, 'lu', lease_until, 'at', attempt)
    redis.call('ZADD', LEASED, lease_until, hex)
    out[#out + 1] = {hex, f[2], token, f[3], f[4], attempt, f[6], f[7]}
  else
    -- Not a job any more (cannot happen through errand; tolerate a hand-edited store).
    redis.call('ZREM', LEASED, hex)
  end
end
return out
