-- prune: ARGV = prefix, now, batch. Removes up to `batch` entries whose every window has
-- ended, with their index records. Returns how many expiry records it looked at.
local now, batch = num(ARGV[2]), num(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, batch)
for _, hex in ipairs(due) do
  local f = redis.call('HMGET', ekey(hex), 'p', 'x')
  if f[1] == '1' then
    redis.call('ZREM', EXPIRY, hex)
  elseif f[1] and num(f[2]) > now then
    redis.call('ZADD', EXPIRY, f[2], hex)
  else
    forget(hex)
  end
end
return #due
