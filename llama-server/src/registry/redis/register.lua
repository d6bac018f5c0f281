-- Insert or refresh one entry of one group, atomically.
-- KEYS: 1 seen (zset id -> deadline ms), 2 data (hash id -> probe JSON),
--       3 order (hash id -> registration number), 4 names (hash shortname -> id),
--       5 short (hash id -> shortname), 6 version (the group's last change),
--       7 groups (set of group names), 8 entries (counter), 9 seq (counter)
-- ARGV: 1 id, 2 probe JSON, 3 shortname, 4 now ms, 5 deadline ms,
--       6 'newest' | 'live', 7 max group members, 8 max groups,
--       9 max entries, 10 group name, 11 key lifetime ms
-- Returns {'ok', version, order} or {'taken', holder} | {'group_full'} |
-- {'groups'} | {'full'}.
local id, data, short = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[4])
local changed = false

if redis.call('SISMEMBER', KEYS[7], ARGV[10]) == 0
    and redis.call('SCARD', KEYS[7]) >= tonumber(ARGV[8]) then
  return {'groups'}
end

local holder = redis.call('HGET', KEYS[4], short)
if holder and holder ~= id then
  local deadline = redis.call('ZSCORE', KEYS[1], holder)
  if deadline and tonumber(deadline) >= now and ARGV[6] == 'live' then
    return {'taken', holder}
  end
  -- The newest registration of a name wins (or the holder expired).
  if redis.call('ZREM', KEYS[1], holder) == 1 then
    redis.call('DECR', KEYS[8])
  end
  redis.call('HDEL', KEYS[2], holder)
  redis.call('HDEL', KEYS[3], holder)
  redis.call('HDEL', KEYS[5], holder)
  changed = true
end

if not redis.call('ZSCORE', KEYS[1], id) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[7]) then
    return {'group_full'}
  end
  if tonumber(redis.call('GET', KEYS[8]) or '0') >= tonumber(ARGV[9]) then
    return {'full'}
  end
  redis.call('INCR', KEYS[8])
  redis.call('HSET', KEYS[3], id, redis.call('INCR', KEYS[9]))
  changed = true
end

local old_short = redis.call('HGET', KEYS[5], id)
if old_short ~= short then
  if old_short and redis.call('HGET', KEYS[4], old_short) == id then
    redis.call('HDEL', KEYS[4], old_short)
  end
  redis.call('HSET', KEYS[5], id, short)
end
redis.call('HSET', KEYS[4], short, id)
if redis.call('HGET', KEYS[2], id) ~= data then
  redis.call('HSET', KEYS[2], id, data)
  changed = true
end
redis.call('ZADD', KEYS[1], ARGV[5], id)
redis.call('SADD', KEYS[7], ARGV[10])

-- Versions come from the store-wide sequence, so a group dropped and
-- created again never repeats a version a server has cached.
local version
if changed then
  version = redis.call('INCR', KEYS[9])
  redis.call('SET', KEYS[6], version)
else
  version = tonumber(redis.call('GET', KEYS[6]) or '0')
end
-- A group's keys outlive its longest-lived entry, so the group of agents
-- that all left disappears even when no server reaps it.
local lifetime = tonumber(ARGV[11])
for i = 1, 6 do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl >= 0 and ttl < lifetime or ttl == -1 then
    redis.call('PEXPIRE', KEYS[i], lifetime)
  end
end
return {'ok', tostring(version), tostring(redis.call('HGET', KEYS[3], id))}
