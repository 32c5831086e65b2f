"""The arq job ``deliver_events()``: one delivery batch, its outcomes, and its follow-ups.

A job delivers the events it owns (``workers.batch``), then one transaction records every outcome
and the ledger entries (``workers.runs``); the events it finished are then counted in this process's
``magbridge_events_finished``. Events that must come back are handed to
follow-up jobs grouped by due time, each with an id derived from its events and that time
(``bridge.store.queue``), so enqueueing one twice queues it once. The job itself then ends: arq
never retries it for an event's sake. arq runs it again only when it did not finish: cancelled by a
shutdown, its worker killed, or Redis failing (``Retry``); the runs already recorded are then
skipped, as their events no longer belong to it.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import structlog
from arq import Retry
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from bridge.store.queue import deliver_job_id, enqueue_deliveries
from bridge.store.records import now_ms
from workers.batch import EventRun, WorkerDeps, deliver_batch
from workers.delivery import Batch
from workers.retry import backoff_seconds
from workers.runs import RunOutcome

__all__ = ["deliver_events", "follow_up_jobs"]

_log = structlog.get_logger("magbridge.jobs")


async def deliver_events(ctx: dict[str, Any]) -> str:
    """arq job: deliver every action of the events of its batch that it owns; returns their statuses
    counted."""
    deps: WorkerDeps = ctx["deps"]
    job_id: str = ctx["job_id"]
    runs: list[EventRun] = []
    batch = Batch(deps.metrics)
    try:
        try:
            await deliver_batch(deps, job_id, runs, batch)
        finally:
            # Cancelled by a shutdown, the runs still say "queued" instead of "delivering" forever.
            await asyncio.shield(_finish(deps, ctx["redis"], job_id, runs, batch))
    except (RedisError, OSError) as exc:
        delay = backoff_seconds(ctx.get("job_try", 1), base=1, cap=deps.settings.retry_cap_seconds)
        _log.error("could not record a delivery batch", events=len(runs), error=str(exc), retry_in=round(delay, 1))
        raise Retry(defer=delay) from exc
    return " ".join(f"{status}={count}" for status, count in sorted(Counter(run.status for run in runs).items()))


def follow_up_jobs(runs: list[EventRun], now: int) -> dict[str, tuple[int, list[str]]]:
    """``job id -> (due ms, event ids)`` for the runs that come back, grouped by when they are due."""
    groups: dict[int, list[str]] = {}
    for run in runs:
        if run.retry_in is not None:
            # Rounded up (never sooner than asked) to a tenth of the delay, between 10 ms and 1 s.
            delay_ms = run.retry_in * 1000
            step = min(1000, max(10, int(delay_ms / 10)))
            due = math.ceil((now + delay_ms) / step) * step
            groups.setdefault(due, []).append(run.event_id)
    return {deliver_job_id(ids, f"retry:{due}"): (due, ids) for due, ids in groups.items()}


async def _finish(deps: WorkerDeps, redis: ArqRedis, job_id: str, runs: list[EventRun], batch: Batch) -> None:
    """Record the outcomes in one transaction, then queue the follow-ups."""
    if not runs:  # nothing begun (or an empty batch): nothing to record
        return
    follow_ups = follow_up_jobs(runs, now_ms())
    next_job = {event_id: (follow_up, due) for follow_up, (due, ids) in follow_ups.items() for event_id in ids}
    outcomes = []
    for run in runs:
        if run.skipped:
            continue
        if run.event is None:
            outcomes.append(RunOutcome(run.event_id, run.status, "gone"))
            continue
        follow_up, due = next_job.get(run.event_id, ("", 0))
        outcome = "done" if run.done else "retry" if follow_up else "again"
        records = {action.key: run.event.actions[action.key] for action in run.changed}
        outcomes.append(RunOutcome(run.event_id, run.status, outcome, run.error, due, follow_up, records))
    async with redis.pipeline(transaction=True) as pipe:
        finished = await deps.runs.queue_settle(
            pipe, job_id, outcomes, ledger=deps.ledger.entries(batch.recorded), ledger_ttl=deps.ledger.ttl_seconds
        )
        await pipe.execute()
    for status, count in finished.items():
        deps.metrics.events_finished.labels(status).inc(count)
    expires = deps.settings.retention_seconds
    try:
        await asyncio.gather(
            *(
                enqueue_deliveries(redis, [follow_up], due_ms=due, expires_s=expires)
                for follow_up, (due, _) in follow_ups.items()
            )
        )
    except (RedisError, OSError) as exc:  # recorded already: the events wait for the sweeper
        _log.error("could not queue follow-up jobs", jobs=len(follow_ups), error=str(exc))
