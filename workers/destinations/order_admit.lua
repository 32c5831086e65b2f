-- Latest wins: admit the Magnews merges of one event-loop iteration in one call, in the order given
-- (the caller puts each contact's newest first).
-- KEYS: per merge, its contact's order hash (keys.magnews_order).
-- ARGV: TTL of a hash (ms), lease of a holder (ms), then per merge: token, origin (its event id),
-- occurred_ms, count of fields, the fields it writes.
-- A field's mark 'f:<field>' = '<ms>:<origin>' of the newest merge admitted for it. A merge is fresh
-- for a field without a mark, with an older mark, or with its own origin's (its own retry).
-- Returns per merge: {'go', fresh field...} (it holds the contact, the marks of its fresh fields are
-- raised), {'superseded', origin of the newest mark} (fresh for no field: older than or as old as
-- what was admitted), or {'wait', ms left on the holder's lease} (another merge of it is in flight).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, lease = ARGV[1], tonumber(ARGV[2])
local results = {}
local i = 3
for k = 1, #KEYS do
  local key = KEYS[k]
  local token, origin, occurred_text = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local occurred, count = tonumber(occurred_text), tonumber(ARGV[i + 3])
  local names = {'holder', 'holder_until'}
  for j = 1, count do names[j + 2] = 'f:' .. ARGV[i + 3 + j] end
  local stored = redis.call('HMGET', key, unpack(names))
  local fresh, newest_ms, newest_by = {}, -1, ''
  for j = 1, count do
    local mark = stored[j + 2]
    if not mark then
      fresh[#fresh + 1] = ARGV[i + 3 + j]
    else
      local sep = string.find(mark, ':', 1, true)
      local ms, by = tonumber(string.sub(mark, 1, sep - 1)), string.sub(mark, sep + 1)
      if by == origin or occurred > ms then
        fresh[#fresh + 1] = ARGV[i + 3 + j]
      elseif ms > newest_ms then
        newest_ms, newest_by = ms, by
      end
    end
  end
  i = i + 4 + count
  local holder, until_ms = stored[1], tonumber(stored[2] or '0')
  if #fresh == 0 then
    results[k] = {'superseded', newest_by}
  elseif holder and holder ~= token and until_ms > now then
    results[k] = {'wait', until_ms - now}
  else
    local mark = occurred_text .. ':' .. origin
    local writes = {'holder', token, 'holder_until', now + lease}
    for _, field in ipairs(fresh) do
      writes[#writes + 1] = 'f:' .. field
      writes[#writes + 1] = mark
    end
    redis.call('HSET', key, unpack(writes))
    redis.call('PEXPIRE', key, ttl)
    results[k] = {'go', unpack(fresh)}
  end
end
return results
