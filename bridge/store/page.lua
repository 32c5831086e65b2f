-- One page of a sorted set, newest first, after a cursor (member and score of the last one seen).
-- KEYS[1]: the zset; ARGV: max, min, count, after member ('' for the first page), after score.
-- The cursor's own rank keeps ties in order; if that member is gone, its score is the boundary.
local count = tonumber(ARGV[3])
if ARGV[4] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[4])
  if rank then
    return redis.call('ZREVRANGE', KEYS[1], rank + 1, rank + count, 'WITHSCORES')
  end
  return redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[5], ARGV[2], 'WITHSCORES', 'LIMIT', 0, count)
end
return redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES', 'LIMIT', 0, count)
