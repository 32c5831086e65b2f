-- Delete a lease only while it still holds our token (compare and delete). KEYS[1]: the lease;
-- ARGV[1]: token. Returns 1 when released, 0 when it was gone or another holder's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
