-- KEYS: lock, last polled slot. ARGV: token, ttl ms, slot (-1: poll now, whatever the schedule).
-- 1 = lock taken (and slot claimed), 0 = this slot was polled already, -1 = another poll holds the lock.
local slot = tonumber(ARGV[3])
if slot >= 0 and slot <= tonumber(redis.call('GET', KEYS[2]) or '-1') then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
if slot >= 0 then redis.call('SET', KEYS[2], slot) end
return 1
