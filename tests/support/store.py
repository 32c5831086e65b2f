"""The event store and arq's queue seen from outside: ingest, requeue, drop jobs, dead letters, records."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from bridge.events import Envelope
from bridge.store import keys
from bridge.store.ingest import EventWriter
from bridge.store.queue import QUEUE_NAME, deliver_job_id, enqueue_deliveries
from bridge.store.reads import EventReader
from bridge.store.records import now_ms

__all__ = ["drop_jobs", "event_record", "ingest", "mark_dead", "queued_batches", "requeue"]


async def ingest(redis: ArqRedis, envelopes: Sequence[Envelope], *, retention_seconds: int = 3600) -> list[bool]:
    """Store and queue ``envelopes`` as the receiver and the poller do."""
    return await EventWriter(redis, retention_seconds=retention_seconds, batch_size=100).ingest(envelopes)


async def requeue(redis: ArqRedis, event_ids: list[str]) -> str:
    """Hand stored events to a new delivery job whatever their state: a job that runs them again."""
    job_id = deliver_job_id(event_ids, f"test:{time.monotonic_ns()}")
    async with redis.pipeline(transaction=True) as pipe:
        for event_id in event_ids:
            pipe.hset(keys.event(event_id), "job", job_id)
        pipe.rpush(keys.batch(job_id), *event_ids)
        await pipe.execute()
    await enqueue_deliveries(redis, [job_id])
    return job_id


async def queued_batches(redis: ArqRedis) -> dict[str, list[str]]:
    """Each queued delivery job's batch: the event ids its list (``keys.batch``) holds, in order."""
    return {
        job.job_id: [event_id.decode() for event_id in await redis.lrange(keys.batch(job.job_id), 0, -1)]  # type: ignore[misc]
        for job in await redis.queued_jobs()
    }


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


async def event_record(redis: aioredis.Redis, event_id: str) -> dict[str, Any]:
    """A stored event's status and action records; the event must exist."""
    event = await EventReader(redis).get(event_id)
    assert event is not None
    return {"status": event.status, "actions": list(event.actions.values())}
