-- Remove entries of one group, atomically, and the group once empty.
-- KEYS: the layout of register.lua (1 seen, 2 data, 3 order, 4 names,
--       5 short, 6 version, 7 groups, 8 entries, 9 seq).
-- ARGV: 1 'any' | 'expired', 2 now ms, 3 group name, 4.. ids.
-- 'expired' removes only entries whose deadline passed (re-checked here,
-- so an entry another server refreshed since the caller looked lives on).
-- Returns {removed, 1 if the group was dropped else 0}.
local removed = 0
local now = tonumber(ARGV[2])
for i = 4, #ARGV do
  local id = ARGV[i]
  local deadline = redis.call('ZSCORE', KEYS[1], id)
  if deadline and (ARGV[1] == 'any' or tonumber(deadline) < now) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    local short = redis.call('HGET', KEYS[5], id)
    if short and redis.call('HGET', KEYS[4], short) == id then
      redis.call('HDEL', KEYS[4], short)
    end
    redis.call('HDEL', KEYS[5], id)
    removed = removed + 1
  end
end
if removed > 0 then
  redis.call('SET', KEYS[6], redis.call('INCR', KEYS[9]), 'KEEPTTL')
  redis.call('DECRBY', KEYS[8], removed)
end
local dropped = 0
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
  dropped = redis.call('SREM', KEYS[7], ARGV[3])
end
return {removed, dropped}
