"""Helpers shared by the test modules: the event store and the queue seen from outside."""

from __future__ import annotations

import time
from collections.abc import Sequence

from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from bridge.events import Envelope
from bridge.store import keys
from bridge.store.ingest import EventWriter
from bridge.store.queue import QUEUE_NAME, deliver_job_id, enqueue_deliveries
from bridge.store.records import now_ms


async def ingest(redis: ArqRedis, envelopes: Sequence[Envelope], *, retention_seconds: int = 3600) -> list[bool]:
    """Store and queue ``envelopes`` as the receiver and the poller do."""
    return await EventWriter(redis, retention_seconds=retention_seconds, batch_size=100).ingest(envelopes)


async def requeue(redis: ArqRedis, event_ids: list[str]) -> str:
    """Hand stored events to a new delivery job whatever their state: a job that runs them again."""
    job_id = deliver_job_id(event_ids, f"test:{time.monotonic_ns()}")
    for event_id in event_ids:
        await redis.hset(keys.event(event_id), "job", job_id)  # type: ignore[misc]
    await enqueue_deliveries(redis, {job_id: event_ids})
    return job_id


async def drop_jobs(redis: ArqRedis) -> None:
    """Empty arq's queue and its job records, as if an operator had cleared them."""
    job_keys = await redis.keys(job_key_prefix + "*")
    await redis.delete(QUEUE_NAME, *job_keys)


async def mark_dead(redis: ArqRedis, event_id: str, error: str) -> None:
    """Give a stored event the final status ``failed`` (a dead letter), as a delivery run would."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.event(event_id), mapping={"status": "failed", "error": error, "updated_at": now_ms()})
        pipe.hdel(keys.event(event_id), "job")
        pipe.zrem(keys.PENDING_INDEX, event_id)
        pipe.zadd(keys.DEAD_INDEX, {event_id: now_ms()})
        pipe.persist(keys.event(event_id))
        await pipe.execute()
