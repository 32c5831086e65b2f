-- Start the delivery runs of one job: close it to new events (if it is the intake), then mark each
-- event of its batch that it still owns as delivering, count its run and try, and return its fields
-- and action records. A job that runs again (arq retries one whose worker died) reads the same batch.
-- KEYS: intake. ARGV: now_ms, event key prefix, actions key prefix, job id, its batch key.
-- Returns {event ids; per event: {fields, actions}, or 0 when it is gone, or 1 when another job
-- owns it or it is final}.
local now = ARGV[1]
if redis.call('GET', KEYS[1]) == ARGV[4] then redis.call('DEL', KEYS[1]) end
local ids = redis.call('LRANGE', ARGV[5], 0, -1)
local runs = {}
for _, id in ipairs(ids) do
  local key = ARGV[2] .. id
  local job = redis.call('HGET', key, 'job')
  if not job then
    runs[#runs + 1] = redis.call('EXISTS', key)
  elseif job ~= ARGV[4] then
    runs[#runs + 1] = 1
  else
    redis.call('HSET', key, 'status', 'delivering', 'updated_at', now)
    redis.call('HINCRBY', key, 'runs', 1)
    redis.call('HINCRBY', key, 'tries', 1)
    runs[#runs + 1] = {redis.call('HGETALL', key), redis.call('HGETALL', ARGV[3] .. id)}
  end
end
return {ids, runs}
