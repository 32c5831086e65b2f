-- Hand stored events to a new delivery job, each only if the job that owns it is still the one the
-- caller found gone (so a concurrent run, replay or sweep wins): status queued, due now. An event
-- that expired leaves the pending index.
-- KEYS: pending index. ARGV: now_ms, retention_ms, event key prefix, batch key prefix, then per
-- event: id, the job found gone ('' for none), the new job id (the event joins its batch).
-- Returns per event: 1 handed over, 0 it changed meanwhile, -1 gone.
local now = ARGV[1]
local results = {}
for i = 5, #ARGV, 3 do
  local key = ARGV[3] .. ARGV[i]
  local current = redis.call('HGET', key, 'job') or ''
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i])
    results[#results + 1] = -1
  elseif current == ARGV[i + 1] then
    redis.call('HSET', key, 'job', ARGV[i + 2], 'status', 'queued', 'updated_at', now)
    redis.call('ZADD', KEYS[1], now, ARGV[i])
    redis.call('RPUSH', ARGV[4] .. ARGV[i + 2], ARGV[i])
    redis.call('PEXPIRE', ARGV[4] .. ARGV[i + 2], ARGV[2])
    results[#results + 1] = 1
  else
    results[#results + 1] = 0
  end
end
return results
