-- Admissions asked for in one event-loop iteration are decided in one call, in order, exactly as
-- one call each would decide them (``bridge.coalesce``).
-- KEYS: rate, holders, breaker, probe[, paused]. ARGV: interval_ms, max_wait_ms, max_concurrency,
-- holder_ttl_ms, cooldown_ms[, credential when KEYS[5] is given], then one token per request.
-- Returns {admitted (0/1), wait_ms, reason} per token.
-- Paused (the destination refused our credentials): requests are deferred ('paused') until
-- ``retry_at``, then one at a time goes out as the probe (``probe``, held until ``probe_until``). A
-- credential (fingerprint) other than the one refused is new: it may probe at once.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local results = {}
local open_until = tonumber(redis.call('HGET', KEYS[3], 'open_until') or '0')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[2])
local first = 6
local paused = false
local refused_credential, retry_at, probe_until, credential = nil, 0, 0, ''
if KEYS[5] then
  first = 7
  credential = ARGV[6]
  local p = redis.call('HMGET', KEYS[5], 'credential', 'retry_at', 'probe_until')
  if p[2] then
    paused = true
    refused_credential = p[1] or ''
    retry_at = tonumber(p[2])
    probe_until = tonumber(p[3] or '0')
  end
end
for i = first, #ARGV do
  local token = ARGV[i]
  local fresh = credential ~= '' and credential ~= refused_credential
  if paused and probe_until > now then
    results[#results + 1] = {0, 200, 'paused'}
  elseif paused and retry_at > now and not fresh then
    results[#results + 1] = {0, retry_at - now, 'paused'}
  elseif open_until > now then
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
      if paused then
        -- This request is the probe: no other goes out until it completes (or its claim lapses).
        probe_until = now + wait + tonumber(ARGV[5])
        redis.call('HSET', KEYS[5], 'probe', token, 'probe_until', probe_until)
      end
      results[#results + 1] = {1, wait, 'ok'}
    end
  end
end
return results
