-- Latest wins: release the contacts held by merges that ended (sent, failed, or never sent), the
-- completions of one event-loop iteration in one call. The marks stay: they are what was admitted.
-- KEYS: per merge, its contact's order hash (keys.magnews_order). ARGV: per merge, its token.
-- Returns per merge 1 when it still held the contact, 0 when its lease had lapsed and another took it.
local results = {}
for k = 1, #KEYS do
  if redis.call('HGET', KEYS[k], 'holder') == ARGV[k] then
    redis.call('HDEL', KEYS[k], 'holder', 'holder_until')
    results[k] = 1
  else
    results[k] = 0
  end
end
return results
