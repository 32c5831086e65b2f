"""Long-lived connections: the Redis client every process opens once and passes down."""

from __future__ import annotations

import redis.asyncio as aioredis

__all__ = ["open_redis"]


def open_redis(url: str) -> aioredis.Redis:
    """A Redis client with short timeouts: a dead Redis must give a fast 503, not a hung request.

    redis-py reconnects on the next command, so the process recovers by itself when Redis returns.
    """
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=15,
        max_connections=256,
    )
    return client
