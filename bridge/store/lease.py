"""Leases: a key that holds its holder's token and lapses by itself (the Magnify poll lock, the
Magnews token refresh). Only the holder may extend or release it, checked in Redis in one step."""

from __future__ import annotations

import redis.asyncio as aioredis

from bridge.store.scripts import script

__all__ = ["Lease"]


class Lease:
    def __init__(self, redis: aioredis.Redis, key: str):
        self._redis = redis
        self.key = key
        self._renew = script(redis, __package__, "lease_renew.lua")
        self._release = script(redis, __package__, "lease_release.lua")

    async def acquire(self, token: str, ttl_ms: int) -> bool:
        """Take the lease for ``ttl_ms`` unless someone holds it."""
        return bool(await self._redis.set(self.key, token, nx=True, px=ttl_ms))

    async def renew(self, token: str, ttl_ms: int) -> bool:
        """Extend the lease while ``token`` holds it; ``False`` once it was lost."""
        return bool(await self._renew(keys=[self.key], args=[token, ttl_ms]))

    async def release(self, token: str) -> bool:
        """Give the lease up if ``token`` still holds it (never someone else's)."""
        return bool(await self._release(keys=[self.key], args=[token]))
