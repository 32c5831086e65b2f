"""Events whose delivery job is gone get a new one: the web's answer to a resent duplicate whose
first try stored the event but could not queue its job, and the sweeper's (``workers.sweeper``).
"""

from __future__ import annotations

from collections.abc import Sequence

from arq.connections import ArqRedis

from bridge.store import keys
from bridge.store.queue import chunks, deliver_job_id, enqueue_deliveries, job_exists
from bridge.store.records import now_ms
from bridge.store.scripts import script

__all__ = ["requeue_orphans"]


async def requeue_orphans(
    redis: ArqRedis, owners: Sequence[tuple[str, str]], *, batch_size: int, salt: str, expires_s: float
) -> tuple[list[str], list[str]]:
    """Of ``(event id, job that owns it)``, hand those whose job arq no longer holds to new jobs and
    queue them; ``(queued, still owned)``. An event taken over meanwhile is left alone."""
    alive = {job: await job_exists(redis, job) for job in {job for _, job in owners if job}}
    orphans = [(event_id, job) for event_id, job in owners if not alive.get(job)]
    queued: list[str] = []
    assign = script(redis, __package__, "assign.lua")
    for batch in chunks(orphans, batch_size):
        stamp = now_ms()
        job_id = deliver_job_id([event_id for event_id, _ in batch], f"{salt}:{stamp}")
        args: list[str | int] = [stamp, keys.EVENT_PREFIX]
        for event_id, job in batch:
            args += [event_id, job, job_id]
        flags = await assign(keys=[keys.PENDING_INDEX], args=args)
        handed = [event_id for (event_id, _), flag in zip(batch, flags, strict=True) if flag == 1]
        if handed:
            await enqueue_deliveries(redis, {job_id: handed}, expires_s=expires_s)
            queued += handed
    return queued, [event_id for event_id, job in owners if alive.get(job)]
