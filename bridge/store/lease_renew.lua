-- Extend a lease only while it still holds our token. KEYS[1]: the lease; ARGV: token, ttl ms.
-- Returns 1 when extended, 0 when the lease is gone or another holder's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
