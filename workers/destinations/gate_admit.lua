-- Admissions asked for in one event-loop iteration are decided in one call, in order, exactly as
-- one call each would decide them (``bridge.coalesce``).
-- KEYS: rate, holders, breaker, probe. ARGV: interval_ms, max_wait_ms, max_concurrency, holder_ttl_ms,
-- cooldown_ms, then one token per request. Returns {admitted (0/1), wait_ms, reason} per token.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local results = {}
local open_until = tonumber(redis.call('HGET', KEYS[3], 'open_until') or '0')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[2])
for i = 6, #ARGV do
  local token = ARGV[i]
  if open_until > now then
    results[#results + 1] = {0, open_until - now, 'open'}
  elseif open_until > 0 and not redis.call('SET', KEYS[4], token, 'NX', 'PX', ARGV[5]) then
    results[#results + 1] = {0, 200, 'probing'}
  elseif held >= tonumber(ARGV[3]) then
    results[#results + 1] = {0, 10, 'busy'}
  else
    local wait = 0
    local refused = false
    if interval > 0 then
      local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
      wait = start - now
      if wait > tonumber(ARGV[2]) then
        refused = true
      else
        redis.call('SET', KEYS[1], start + interval, 'PX', wait + interval + 1000)
      end
    end
    if refused then
      results[#results + 1] = {0, wait, 'rate'}
    else
      redis.call('ZADD', KEYS[2], now + wait + tonumber(ARGV[4]), token)
      held = held + 1
      results[#results + 1] = {1, wait, 'ok'}
    end
  end
end
return results
