"""Long-lived connections: the Redis client every process opens once and passes down."""

from __future__ import annotations

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from bridge.store.queue import deserialize_job, serialize_job

__all__ = ["open_redis"]


def open_redis(url: str) -> ArqRedis:
    """A Redis client that can also queue arq jobs, with short timeouts: a dead Redis must give a
    fast 503, not a hung request.

    redis-py reconnects on the next command, so the process recovers by itself when Redis returns.
    """
    pool = ConnectionPool.from_url(
        url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=15, max_connections=256
    )
    client = ArqRedis(pool, job_serializer=serialize_job, job_deserializer=deserialize_job)
    client.auto_close_connection_pool = True  # as ``Redis.from_url`` does: ``aclose`` closes the pool too
    return client
