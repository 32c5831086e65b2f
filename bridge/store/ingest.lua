-- Store each new event, index it and append it to the open delivery job (the intake); count duplicates.
-- The intake job takes new events until it holds ARGV[5] of them or a worker begins it
-- (workers/begin.lua closes it); then the next new event opens a job named ARGV[6]..':'..n.
-- KEYS: events index, pending index, stats hash, intake.
-- ARGV: now_ms, retention_ms, event key prefix, batch key prefix, most events per job, a fresh
-- job id prefix, then 6 values per event: id, source, type, occurred_at, payload, bounded type label.
-- Returns {per event: 1 new, 0 duplicate, or (a duplicate no run has started yet) its job id;
-- the jobs that took new events}.
local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local most = tonumber(ARGV[5])
local results, jobs, opened = {}, {}, 0
local accepted = 0
local job = redis.call('GET', KEYS[4])
local held = job and redis.call('LLEN', ARGV[4] .. job) or 0
for i = 7, #ARGV, 6 do
  local id = ARGV[i]
  local key = ARGV[3] .. id
  local series = '|source=' .. ARGV[i + 1] .. ',type=' .. ARGV[i + 5]
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', KEYS[3], 'duplicates' .. series, 1)
    local status, owner = unpack(redis.call('HMGET', key, 'status', 'job'))
    results[#results + 1] = (status == 'queued' and owner) or 0
  else
    if not job or held >= most then
      opened = opened + 1
      job = ARGV[6] .. ':' .. opened
      held = 0
      redis.call('SET', KEYS[4], job)
    end
    if jobs[#jobs] ~= job then jobs[#jobs + 1] = job end
    redis.call('RPUSH', ARGV[4] .. job, id)
    redis.call('PEXPIRE', ARGV[4] .. job, retention)
    held = held + 1
    redis.call('HINCRBY', KEYS[3], 'received' .. series, 1)
    redis.call('HSET', key, 'source', ARGV[i + 1], 'type', ARGV[i + 2], 'occurred_at', ARGV[i + 3],
      'payload', ARGV[i + 4], 'received_at', now, 'updated_at', now, 'status', 'queued',
      'generation', 0, 'runs', 0, 'tries', 0, 'job', job)
    redis.call('PEXPIRE', key, retention)
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('ZADD', KEYS[2], now, id)
    results[#results + 1] = 1
    accepted = accepted + 1
  end
end
if accepted > 0 then redis.call('HINCRBY', KEYS[3], 'received', accepted) end
if #results > accepted then redis.call('HINCRBY', KEYS[3], 'duplicates', #results - accepted) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - retention)
return {results, jobs}
