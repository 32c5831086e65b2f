"""The idempotency ledger: request keys that a destination has acknowledged.

A job that runs again (a retry, a replay, a worker that died after sending) checks the ledger first
and skips what was delivered. The narrow window between a send and its ledger write is covered by
the destination itself: the same ``Idempotency-Key`` (and broadcast ``id``) is sent again.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

__all__ = ["Ledger"]


class Ledger:
    def __init__(self, redis: aioredis.Redis, *, ttl_seconds: int):
        self._redis = redis
        self._ttl = ttl_seconds

    @staticmethod
    def _key(request_key: str) -> str:
        return f"mb:ledger:{request_key}"

    def queue_lookup(self, pipe: Pipeline, request_keys: list[str]) -> None:
        """Add the lookup of ``request_keys`` to a pipeline; read its result with ``parse_lookup``."""
        pipe.mget([self._key(key) for key in request_keys] or ["mb:ledger:"])

    @staticmethod
    def parse_lookup(request_keys: list[str], values: list[bytes | None]) -> dict[str, dict[str, Any]]:
        """The ledger entries of those keys that were delivered."""
        return {key: json.loads(value) for key, value in zip(request_keys, values, strict=False) if value}

    async def delivered(self, request_keys: list[str]) -> dict[str, dict[str, Any]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_lookup(pipe, request_keys)
            [values] = await pipe.execute()
        return self.parse_lookup(request_keys, values)

    async def record(self, request_key: str, entry: dict[str, Any]) -> None:
        await self._redis.set(self._key(request_key), json.dumps(entry, separators=(",", ":")), ex=self._ttl)
