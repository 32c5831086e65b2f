-- Completions of one event-loop iteration, in one call. KEYS: holders, breaker, probe.
-- ARGV: threshold, cooldown_ms, then token and outcome (ok|fail|none) per request.
-- Returns 1 per completion that opened the circuit, else 0.
local results = {}
for i = 3, #ARGV, 2 do
  local opened = 0
  redis.call('ZREM', KEYS[1], ARGV[i])
  if ARGV[i + 1] == 'ok' then
    if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DEL', KEYS[2], KEYS[3]) end
  elseif ARGV[i + 1] == 'fail' then
    local failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
    local was_open = tonumber(redis.call('HGET', KEYS[2], 'open_until') or '0') > 0
    if failures >= tonumber(ARGV[1]) or was_open then
      local t = redis.call('TIME')
      local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      redis.call('HSET', KEYS[2], 'open_until', now + tonumber(ARGV[2]))
      redis.call('DEL', KEYS[3])
      if not was_open then opened = 1 end
    end
  end
  results[#results + 1] = opened
end
return results
