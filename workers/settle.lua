-- Record the outcomes of one job's delivery runs and the ledger entries of what they delivered.
-- KEYS: pending index, dead-letter index. (The worker counts finished events itself.)
-- ARGV: now_ms, retention_ms (the dedupe window: an unfinished event's), ledger TTL (s), event key
-- prefix, actions key prefix, batch key prefix, the finished job's batch key ('' to keep it: the job
-- runs again), count of ledger entries, record retention ms (a delivered or ignored event's record
-- and actions keep that long; a dead letter's until handled), then key, entry and window of each
-- ('record': the record retention, as its event was delivered now, so a replay is its only reader;
-- else the ledger TTL: a retry may come late in the window), then per run: event id, status, error,
-- outcome, due at (ms), next job id, count of action records, then key and record of each.
-- Outcomes: 'done' (status is final), 'retry' (appended to the next job's batch, which owns it,
-- due at its time), 'again' (interrupted: the same job runs it again), 'gone' (the event expired).
local now = ARGV[1]
local retention = ARGV[2]
local record_retention = ARGV[9]
local i = 10
for _ = 1, tonumber(ARGV[8]) do
  if ARGV[i + 2] == 'record' then
    redis.call('SET', ARGV[i], ARGV[i + 1], 'PX', record_retention)
  else
    redis.call('SET', ARGV[i], ARGV[i + 1], 'EX', ARGV[3])
  end
  i = i + 3
end
while i <= #ARGV do
  local id, status, err, outcome, due, job = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local count = tonumber(ARGV[i + 6])
  i = i + 7
  local event, actions = ARGV[4] .. id, ARGV[5] .. id
  if count > 0 then
    redis.call('HSET', actions, unpack(ARGV, i, i + 2 * count - 1))
    i = i + 2 * count
  end
  if outcome == 'done' then
    redis.call('HSET', event, 'status', status, 'updated_at', now, 'error', err)
    redis.call('HDEL', event, 'job')
    redis.call('ZREM', KEYS[1], id)
    if status == 'failed' then
      redis.call('ZADD', KEYS[2], now, id)
      redis.call('PERSIST', event)
      redis.call('PERSIST', actions)
    else
      redis.call('ZREM', KEYS[2], id)
      redis.call('PEXPIRE', event, record_retention)
      redis.call('PEXPIRE', actions, record_retention)
    end
  elseif outcome == 'gone' then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('HSET', event, 'status', status, 'updated_at', now)
    if outcome == 'retry' then
      redis.call('HSET', event, 'job', job)
      redis.call('ZADD', KEYS[1], due, id)
      redis.call('RPUSH', ARGV[6] .. job, id)
      redis.call('PEXPIRE', ARGV[6] .. job, retention)
    end
    if count > 0 then redis.call('PEXPIRE', actions, retention) end
  end
end
if ARGV[7] ~= '' then redis.call('DEL', ARGV[7]) end
return 1
