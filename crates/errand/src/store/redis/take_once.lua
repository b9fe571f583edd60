-- take_once: ARGV = prefix, hex, now. The response a hit-for-pass entry keeps for the next
-- try: {status, headers, body} to the first caller, nil after.
local hex, now = ARGV[2], num(ARGV[3])
local e = ekey(hex)
local f = redis.call('HMGET', e, 'p', 'vk', 'vs', 'vh', 'vb', 'vu')
if f[1] ~= '0' or f[2] ~= '2' or not f[3] or num(f[6]) <= now then return false end
redis.call('HDEL', e, 'vs', 'vh', 'vb')
redis.call('HSET', e, 'v', version())
return {f[3], f[4] or '', f[5] or ''}
