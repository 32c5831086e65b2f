-- Start the delivery runs of one job: each event the job owns is marked delivering, its runs and
-- tries counted, and its fields and action records returned.
-- ARGV: now_ms, event key prefix, actions key prefix, job id, then the event ids.
-- Returns per event: {fields, actions}, or 0 when it is gone, or 1 when another job owns it.
local now = ARGV[1]
local runs = {}
for i = 5, #ARGV do
  local key = ARGV[2] .. ARGV[i]
  local job = redis.call('HGET', key, 'job')
  if not job then
    runs[#runs + 1] = redis.call('EXISTS', key)  -- 1: an event that no job owns (final)
  elseif job ~= ARGV[4] then
    runs[#runs + 1] = 1
  else
    redis.call('HSET', key, 'status', 'delivering', 'updated_at', now)
    redis.call('HINCRBY', key, 'runs', 1)
    redis.call('HINCRBY', key, 'tries', 1)
    runs[#runs + 1] = {redis.call('HGETALL', key), redis.call('HGETALL', ARGV[3] .. ARGV[i])}
  end
end
return runs
