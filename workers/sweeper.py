"""The safety net under "no event waits without a job": queue pending events whose job is gone.

Every accepted event sits in ``keys.PENDING_INDEX`` (scored by when it is due) until it is final, and names
the job that owns it. An event due more than ``sweep_after_seconds`` ago whose job arq no longer
holds (the process died between storing it and queueing its job, a job expired, an operator cleared
the queue) is handed to a new job (``assign.lua``, which yields to any run, replay or sweep that
took it over meanwhile). Delivery is idempotent, so a sweep can never cause a repeat.
"""

from __future__ import annotations

from typing import Any

import structlog
from arq.connections import ArqRedis

from bridge.store import keys
from bridge.store.queue import chunks, deliver_job_id, enqueue_deliveries, job_exists
from bridge.store.records import now_ms, text
from bridge.store.scripts import script
from workers.batch import WorkerDeps

__all__ = ["sweep_pending"]

_log = structlog.get_logger("magbridge.sweeper")
_BATCH = 1000


async def sweep_pending(ctx: dict[str, Any]) -> int:
    """arq cron job: queue stale pending events that have no job; returns how many were queued."""
    redis: ArqRedis = ctx["redis"]
    deps: WorkerDeps = ctx["deps"]
    settings = deps.settings
    cutoff = now_ms() - int(settings.sweep_after_seconds * 1000)
    stale = [text(m) for m in await redis.zrangebyscore(keys.PENDING_INDEX, "-inf", cutoff, start=0, num=_BATCH)]
    if not stale:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in stale:
            pipe.hget(keys.event(event_id), "job")
        owners = [text(job) for job in await pipe.execute()]
    alive = {job: await job_exists(redis, job) for job in set(owners) if job}
    orphans = [(event_id, job) for event_id, job in zip(stale, owners, strict=True) if not alive.get(job)]
    queued: list[str] = []
    assign = script(redis, __package__, "assign.lua")
    for batch in chunks(orphans, settings.worker_batch_size):
        stamp = now_ms()
        job_id = deliver_job_id([event_id for event_id, _ in batch], f"sweep:{stamp}")
        args: list[str | int] = [stamp, settings.retention_seconds * 1000, keys.EVENT_PREFIX, keys.BATCH_PREFIX]
        for event_id, job in batch:
            args += [event_id, job, job_id]
        flags = await assign(keys=[keys.PENDING_INDEX], args=args)
        if any(flag == 1 for flag in flags):
            await enqueue_deliveries(redis, [job_id], expires_s=settings.retention_seconds)
            queued += [event_id for (event_id, _), flag in zip(batch, flags, strict=True) if flag == 1]
    # Restart the clock of the events that still have a job, so the next sweep looks further.
    waiting = [event_id for event_id, job in zip(stale, owners, strict=True) if alive.get(job)]
    if waiting:
        await redis.zadd(keys.PENDING_INDEX, dict.fromkeys(waiting, now_ms()), xx=True)
    if queued:
        deps.metrics.swept.inc(len(queued))
        _log.warning("requeued events without a job", count=len(queued), first=queued[0])
    return len(queued)
