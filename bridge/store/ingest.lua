-- Store each new event, index it and name the job that will deliver it; count duplicates.
-- KEYS: events index, pending index, stats hash.
-- ARGV: now_ms, retention_ms, event key prefix, then 7 values per event: id, source, type,
-- occurred_at, payload, job id, bounded type label. Returns per event: 1 when new, 0 for a
-- duplicate, or, for a duplicate that no run has started yet, the id of the job that owns it.
local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local prefix = ARGV[3]
local results = {}
local accepted = 0
for i = 4, #ARGV, 7 do
  local id = ARGV[i]
  local key = prefix .. id
  local series = '|source=' .. ARGV[i + 1] .. ',type=' .. ARGV[i + 6]
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', KEYS[3], 'duplicates' .. series, 1)
    local status, job = unpack(redis.call('HMGET', key, 'status', 'job'))
    results[#results + 1] = (status == 'queued' and job) or 0
  else
    redis.call('HINCRBY', KEYS[3], 'received' .. series, 1)
    redis.call('HSET', key, 'source', ARGV[i + 1], 'type', ARGV[i + 2], 'occurred_at', ARGV[i + 3],
      'payload', ARGV[i + 4], 'received_at', now, 'updated_at', now, 'status', 'queued',
      'generation', 0, 'runs', 0, 'tries', 0, 'job', ARGV[i + 5])
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
return results
