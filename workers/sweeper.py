"""The safety net under "no event waits without a job": queue pending events whose job is gone.

Every accepted event sits in ``mb:pending`` (scored by when it is due) until it is final, and names
the job that owns it. An event due more than ``sweep_after_seconds`` ago whose job arq no longer
holds (the process died between storing it and queueing its job, a job expired, an operator cleared
the queue) is handed to a new job (``bridge.store.orphans``). Delivery is idempotent, so a sweep can
never cause a repeat.
"""

from __future__ import annotations

from typing import Any

import structlog
from arq.connections import ArqRedis

from bridge.store import keys
from bridge.store.orphans import requeue_orphans
from bridge.store.records import now_ms, text
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
        owners = [(event_id, text(job)) for event_id, job in zip(stale, await pipe.execute(), strict=True)]
    queued, waiting = await requeue_orphans(
        redis, owners, batch_size=settings.worker_batch_size, salt="sweep", expires_s=settings.retention_seconds
    )
    # Restart the clock of the events that still have a job, so the next sweep looks further.
    if waiting:
        await redis.zadd(keys.PENDING_INDEX, dict.fromkeys(waiting, now_ms()), xx=True)
    if queued:
        await deps.stats.incr("swept", amount=len(queued))
        _log.warning("requeued events without a job", count=len(queued), first=queued[0])
    return len(queued)
