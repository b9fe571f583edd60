-- Shared by every errand script. ARGV[1] is the key prefix ("{errand}:"): every key of one
-- deployment carries the same hash tag. Keys named by the data (entries, tags) are built
-- here from that prefix.
local P = ARGV[1]
local JOBS, EXPIRY, URIS, IDS = P .. 'jobs', P .. 'expiry', P .. 'uris', P .. 'ids'
-- Every job is in JOBS, scored priority * BAND + the time it is next available (ms): its
-- run time while queued, the end of its lease while a worker holds it. So one range query
-- per priority finds what is ready now, by priority then time, and a job whose lease ran out
-- is ready again without anyone moving it.
local BAND = 10000000000000
-- An entry's TTL runs this long past its last window: the pruner removes it (and its index
-- records) first; the TTL is the backstop when no errand process is running.
local GRACE = 60000

local function ekey(hex) return P .. 'e:' .. hex end
local function ikey(hex) return P .. 'i:' .. hex end
local function num(v) return tonumber(v) or 0 end

-- Drops the tag memberships of an entry's content.
local function untag(hex)
  local tags = redis.call('HGET', ikey(hex), 'tg')
  if tags and tags ~= '' then
    for tag in string.gmatch(tags, '[^\031]+') do
      redis.call('SREM', P .. 'tag:' .. tag, hex)
    end
  end
  redis.call('HDEL', ikey(hex), 'tg')
end

-- Records the tags of an entry's new content (unit-separated).
local function tag(hex, tags)
  if tags == '' then return end
  redis.call('HSET', ikey(hex), 'tg', tags)
  for t in string.gmatch(tags, '[^\031]+') do
    redis.call('SADD', P .. 'tag:' .. t, hex)
  end
end

-- Removes an entry with its index records.
local function forget(hex)
  local uri = redis.call('HGET', ikey(hex), 'u') or redis.call('HGET', ekey(hex), 'u')
  if uri then redis.call('ZREM', URIS, uri .. '\n' .. hex) end
  untag(hex)
  redis.call('DEL', ekey(hex), ikey(hex))
  redis.call('ZREM', EXPIRY, hex)
end

-- A settled entry lives until x (ms): TTL with grace, and its place in the expiry index.
-- (The caller has written x into the entry.)
-- The TTL is written as an integer ('%d'), never as Lua's '1e+14', which PEXPIRE refuses:
-- a script that failed here would leave its earlier writes applied and its later ones not.
local function expire_at(hex, x, now)
  local ttl = x - now + GRACE
  if ttl < 1 then ttl = 1 end
  redis.call('PEXPIRE', ekey(hex), string.format('%d', ttl))
  redis.call('ZADD', EXPIRY, x, hex)
end

local function version()
  return redis.call('INCR', IDS)
end
