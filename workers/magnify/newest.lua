-- KEYS[1]: the newest value seen; ARGV[1]: a candidate. Keeps the larger; returns it.
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local candidate = tonumber(ARGV[1])
if candidate > current then redis.call('SET', KEYS[1], ARGV[1]) return candidate end
return current
