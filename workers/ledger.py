"""The idempotency ledger: request keys that a destination has acknowledged.

A job that runs again (a retry, a replay, a worker that died after sending) checks the ledger first
and skips what was delivered. A delivery's entry is written with the outcome of its batch, in the
same transaction; the window between a send and that write is covered by the destination itself:
the same ``Idempotency-Key`` (and broadcast ``id``) is sent again.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import redis.asyncio as aioredis

from bridge.store import keys

__all__ = ["Ledger"]


class Ledger:
    def __init__(self, redis: aioredis.Redis, *, ttl_seconds: int):
        self._redis = redis
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def _key(request_key: str) -> str:
        return keys.ledger(request_key)

    async def delivered(self, request_keys: list[str]) -> dict[str, dict[str, Any]]:
        """The ledger entries of those keys that were delivered."""
        if not request_keys:
            return {}
        values = await self._redis.mget([self._key(key) for key in request_keys])
        return {key: json.loads(value) for key, value in zip(request_keys, values, strict=True) if value}

    def entries(self, recorded: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
        """``request key -> entry`` as the Redis keys and values to write (``DeliveryRuns.queue_settle``)."""
        return [(self._key(key), orjson.dumps(entry).decode()) for key, entry in recorded.items()]
