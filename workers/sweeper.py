"""The safety net under "no job may expire silently": re-queue events that wait without a job.

Every accepted event sits in ``mb:pending`` until it reaches a final status. An event still
pending after ``sweep_after_seconds`` whose arq job record is gone (arq dropped it, or an operator
cleared the queue) is queued again. Delivery is idempotent, so a sweep can never cause a repeat.
"""

from __future__ import annotations

from typing import Any

import structlog

from bridge.store import EventStore

__all__ = ["sweep_pending"]

_log = structlog.get_logger("magbridge.sweeper")
_BATCH = 1000


async def sweep_pending(ctx: dict[str, Any]) -> int:
    """Re-queue stale pending events that have no job; returns how many were queued."""
    store: EventStore = ctx["deps"].store
    settings = ctx["deps"].settings
    stale = await store.stale_pending(older_than_seconds=settings.sweep_after_seconds, limit=_BATCH)
    orphans = [event_id for event_id in stale if not await store.job_exists(event_id)]
    results = await store.enqueue(orphans)
    queued = [event_id for event_id, result in results.items() if result == "queued"]
    await store.touch_pending(stale)
    if queued:
        await ctx["deps"].stats.incr("swept", amount=len(queued))
        _log.warning("requeued events without a job", count=len(queued), first=queued[0])
    return len(queued)
