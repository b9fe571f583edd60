-- heartbeat: ARGV = prefix, hex, job id, lease token, new lease end. 1 if still held.
local hex = ARGV[2]
local f = redis.call('HMGET', ekey(hex), 'p', 'j', 'lt', 'pr')
if f[1] ~= '1' or f[2] ~= ARGV[3] or f[3] ~= ARGV[4] then return 0 end
redis.call('HSET', ekey(hex), 'lu', ARGV[5])
redis.call('ZADD', JOBS, num(f[4]) * BAND + num(ARGV[5]), hex)
return 1
