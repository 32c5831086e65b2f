-- Store each new event, index it and append it to the open delivery job (the intake); tally new events
-- and duplicates by source (bridge/store/stats.py: exact totals, kept in the call that stores).
-- The intake job takes new events until it holds ARGV[5] of them or a worker begins it
-- (workers/begin.lua closes it); then the next new event opens a job named ARGV[6]..':'..n.
-- KEYS: events index, pending index, stats hash, intake.
-- An id is a duplicate while its dedupe marker lives (the dedupe window), or while its record does:
-- records stored before the markers existed have none, and a dead letter outlives its marker.
-- ARGV: now_ms, dedupe window ms (the marker's and an unfinished record's expiry), event key
-- prefix, batch key prefix, most events per job, a fresh job id prefix, dedupe marker key prefix,
-- record retention ms (the listing index keeps that long), then 5 values per event: id, source,
-- type, occurred_at, payload.
-- Returns {per event: 1 new, 0 duplicate, or (a duplicate no run has started yet) its job id;
-- the jobs that took new events}.
local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local most = tonumber(ARGV[5])
local record_retention = tonumber(ARGV[8])
local results, jobs, opened = {}, {}, 0
local received, duplicates = {}, {}
local job = redis.call('GET', KEYS[4])
local held = job and redis.call('LLEN', ARGV[4] .. job) or 0
for i = 9, #ARGV, 5 do
  local id = ARGV[i]
  local key = ARGV[3] .. id
  local marker = ARGV[7] .. id
  local source = ARGV[i + 1]
  if redis.call('EXISTS', marker) == 1 or redis.call('EXISTS', key) == 1 then
    duplicates[source] = (duplicates[source] or 0) + 1
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
    received[source] = (received[source] or 0) + 1
    redis.call('HSET', key, 'source', source, 'type', ARGV[i + 2], 'occurred_at', ARGV[i + 3],
      'payload', ARGV[i + 4], 'received_at', now, 'updated_at', now, 'status', 'queued',
      'generation', 0, 'runs', 0, 'tries', 0, 'job', job)
    redis.call('PEXPIRE', key, retention)
    redis.call('SET', marker, now, 'PX', retention)
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('ZADD', KEYS[2], now, id)
    results[#results + 1] = 1
  end
end
for source, count in pairs(received) do redis.call('HINCRBY', KEYS[3], 'received|source=' .. source, count) end
for source, count in pairs(duplicates) do redis.call('HINCRBY', KEYS[3], 'duplicates|source=' .. source, count) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - record_retention)
return {results, jobs}
