-- Completions of one event-loop iteration, in one call. KEYS: holders, breaker, probe[, paused, gauges].
-- ARGV: threshold, cooldown_ms[, credential and the gauge's field when KEYS[4] is given], then token
-- and outcome per request: ok (a 2xx), rejected (another 4xx), refused:<status> (401/403: our
-- credentials), fail (transient), none (no answer to judge by).
-- Returns per completion: 1 when it opened the circuit, 2 when it paused the destination, 3 when it
-- resumed it, else 0.
local results = {}
local first = 3
local paused_key = KEYS[4]
if paused_key then first = 5 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cooldown = tonumber(ARGV[2])
for i = first, #ARGV, 2 do
  local token, outcome = ARGV[i], ARGV[i + 1]
  local result = 0
  redis.call('ZREM', KEYS[1], token)
  local refused = string.sub(outcome, 1, 8) == 'refused:'
  if outcome == 'ok' or outcome == 'rejected' or refused then
    -- Any answer but a transient failure proves the destination is up.
    if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DEL', KEYS[2], KEYS[3]) end
  elseif outcome == 'fail' then
    local failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
    local was_open = tonumber(redis.call('HGET', KEYS[2], 'open_until') or '0') > 0
    if failures >= tonumber(ARGV[1]) or was_open then
      redis.call('HSET', KEYS[2], 'open_until', now + cooldown)
      redis.call('DEL', KEYS[3])
      if not was_open then result = 1 end
    end
  end
  if paused_key then
    if refused then
      if redis.call('EXISTS', paused_key) == 0 then
        redis.call('HSET', paused_key, 'since', now)
        redis.call('HSET', KEYS[5], ARGV[4], 1)
        result = 2
      end
      redis.call('HSET', paused_key, 'at', now, 'status', string.sub(outcome, 9), 'credential', ARGV[3],
        'retry_at', now + cooldown)
      redis.call('HDEL', paused_key, 'probe', 'probe_until')
    elseif outcome == 'ok' then
      if redis.call('DEL', paused_key) == 1 then
        redis.call('HSET', KEYS[5], ARGV[4], 0)
        result = 3
      end
    elseif redis.call('HGET', paused_key, 'probe') == token then
      -- The probe proved nothing (another 4xx, a transient failure, no answer): the next one after a cooldown.
      redis.call('HSET', paused_key, 'retry_at', now + cooldown)
      redis.call('HDEL', paused_key, 'probe', 'probe_until')
    end
  end
  results[#results + 1] = result
end
return results
