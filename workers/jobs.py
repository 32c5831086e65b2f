"""Delivery runs: load a batch of events, plan their actions, deliver, record every outcome.

The worker claims due delivery jobs in batches (``workers.worker``) and hands them to
``deliver_batch``. A batch costs a fixed number of Redis round trips, not a number per event: one
script starts every run and reads the events, one ``MGET`` reads the ledger, the destination gates
and the Magnews batcher coalesce what the events send, and one transaction (``queue_outcomes``)
records every outcome, the new ledger entries and the queue's bookkeeping. ``deliver_event`` is the
same run for one event, as a plain arq job.

An action that failed transiently, or was deferred by its destination's limits, makes the event's
job come back after a backoff; only those actions are tried again. An action gives up (dead letter)
after ``retry_max_attempts`` failures or when the event is older than ``retry_max_age_seconds``;
deferrals alone never exhaust attempts. A run that crashes (a bug, a timeout) is retried the same
way and dead-lettered with the error once its attempts are spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from arq import Retry
from redis.asyncio.client import Pipeline

from bridge.queue import deliver_job_id
from bridge.stats import Stats, StatsBuffer
from bridge.store import EventStore, RunOutcome, StoredEvent, now_ms
from config.rules import RuleSet
from config.settings import Settings
from workers.delivery import Batch, DeliveryContext, Sender, deliver_action, new_record
from workers.ledger import Ledger
from workers.mapping import PlannedAction, plan_actions
from workers.retry import backoff_seconds

__all__ = ["EventRun", "WorkerDeps", "deliver_batch", "deliver_event", "queue_outcomes"]

_PENDING = ("retrying", "deferred")


@dataclass(slots=True)
class WorkerDeps:
    """What a delivery job needs, built once per worker process (``ctx["deps"]``)."""

    settings: Settings
    store: EventStore
    ledger: Ledger
    stats: Stats
    rules: RuleSet
    senders: dict[str, Sender]
    template_context: dict[str, Any]


@dataclass(slots=True)
class EventRun:
    """One event's run and what it came to. ``retry_in`` set: its job comes back after that many
    seconds; ``status == "queued"``: the run was interrupted and the job runs again as it is."""

    event_id: str
    job_try: int
    event: StoredEvent | None = None
    planned: list[PlannedAction] = field(default_factory=list)
    changed: list[PlannedAction] = field(default_factory=list)
    status: str = "queued"
    retry_in: float | None = None
    error: str = ""

    @property
    def job_done(self) -> bool:
        return self.retry_in is None and self.status != "queued"


async def deliver_event(ctx: dict[str, Any], event_id: str) -> str:
    """arq job: deliver every action of one event; returns the event's status."""
    deps: WorkerDeps = ctx["deps"]
    batch = Batch()
    runs = [EventRun(event_id, ctx.get("job_try", 1))]
    try:
        await deliver_batch(deps, runs, batch)
    finally:
        # Cancelled by a shutdown, the run says "queued" instead of "delivering" forever.
        await asyncio.shield(_write_outcomes(deps, runs, batch))
    if runs[0].retry_in is not None:
        raise Retry(defer=runs[0].retry_in)
    return runs[0].status


async def _write_outcomes(deps: WorkerDeps, runs: list[EventRun], batch: Batch) -> None:
    async with deps.store.redis.pipeline(transaction=True) as pipe:
        await queue_outcomes(deps, pipe, runs, batch)
        await pipe.execute()


async def deliver_batch(deps: WorkerDeps, runs: list[EventRun], batch: Batch) -> None:
    """Run each event's delivery; every outcome is left on its ``EventRun`` for ``queue_outcomes``.

    If the batch itself fails (Redis, a bug), each run not yet decided retries with backoff.
    """
    try:
        await _deliver_batch(deps, runs, batch)
    except Exception as exc:
        batch.log.exception("delivery batch crashed", events=len(runs))
        for run in runs:
            if run.status == "queued":
                _crashed(deps.settings, run, exc)


async def _deliver_batch(deps: WorkerDeps, runs: list[EventRun], batch: Batch) -> None:
    events = await deps.store.begin_runs([run.event_id for run in runs])
    for run, event in zip(runs, events, strict=True):
        run.event = event
        if event is None:
            run.status = "missing"
            batch.log.warning("event not found", event_id=run.event_id, reason="expired or purged before delivery")
            continue
        try:
            run.planned = plan_actions(deps.rules, event, deps.template_context)
        except Exception as exc:  # a bug in planning must not stop the rest of the batch
            _crashed(deps.settings, run, exc)
            continue
        if not run.planned:
            run.status = "ignored"
            batch.log.info("event ignored", event_id=run.event_id, source=event.source, type=event.type,
                           reason="no rule matches")  # fmt: skip
    active = [run for run in runs if run.planned and run.status == "queued"]
    keys = [request.key for run in active for action in run.planned for request in action.requests]
    batch.delivered.update(await deps.ledger.delivered(keys))
    try:
        async with asyncio.timeout(deps.settings.job_timeout_seconds):
            await asyncio.gather(*(_deliver_guarded(deps, run, batch) for run in active))
    except TimeoutError as exc:
        for run in active:
            if run.status == "queued":  # still running when the time was up
                _crashed(deps.settings, run, exc)


async def _deliver_guarded(deps: WorkerDeps, run: EventRun, batch: Batch) -> None:
    """One event's deliveries; a crash becomes a retry and leaves the others of the batch alone."""
    assert run.event is not None
    structlog.contextvars.bind_contextvars(
        event_id=run.event_id, job_id=deliver_job_id(run.event_id), source=run.event.source, type=run.event.type
    )
    try:
        await _deliver(deps, run, run.event, batch)
    except Exception as exc:
        batch.log.exception("delivery run crashed", job_try=run.job_try)
        _crashed(deps.settings, run, exc)


async def _deliver(deps: WorkerDeps, run: EventRun, event: StoredEvent, batch: Batch) -> None:
    context = DeliveryContext(batch, job_try=run.job_try, received_at_ms=event.received_at)
    waits: list[float] = []
    for action in run.planned:
        record = event.actions.get(action.key) or new_record(action)
        if record["status"] in ("delivered", "dead"):
            # Delivered needs nothing; dead waits for a replay (which resets it to pending).
            event.actions[action.key] = record
            continue
        outcome = await deliver_action(action, record, send=deps.senders[action.destination], run=context)
        if outcome.retry_after is not None:
            waits.append(outcome.retry_after)
        event.actions[action.key] = outcome.record
        run.changed.append(action)
    if waits:
        run.changed += _give_up_exhausted(deps.settings, event, run.planned)
        if any(event.actions[action.key]["status"] in _PENDING for action in run.planned):
            run.retry_in = _retry_delay(deps.settings, event, run.planned, waits, batch.stats)
            run.status = "retrying"
            batch.log.info("event retrying", delay=round(run.retry_in, 3))
            return
    dead = [event.actions[a.key] for a in run.planned if event.actions[a.key]["status"] == "dead"]
    run.status = "failed" if dead else "delivered"
    for record in dead:
        batch.stats.incr("dead_letters", {"destination": record["destination"]})
        batch.log.warning(
            "dead letter", action=record["key"], destination=record["destination"], error=record["last_error"]
        )


def _crashed(settings: Settings, run: EventRun, exc: Exception) -> None:
    """Retry like a transient failure, then dead-letter the event with the error."""
    if run.job_try < settings.retry_max_attempts:
        run.status = "retrying"
        run.retry_in = backoff_seconds(run.job_try, base=settings.retry_base_seconds, cap=settings.retry_cap_seconds)
    else:
        run.status = "failed"
        run.retry_in = None
        run.error = f"internal error after {run.job_try} tries: {type(exc).__name__}: {exc}"


async def queue_outcomes(
    deps: WorkerDeps, pipe: Pipeline, runs: list[EventRun], batch: Batch, *, queue: str | None = None
) -> None:
    """Add to ``pipe`` every write the runs call for: action records, statuses, outcomes, the new
    ledger entries and the counters; with ``queue``, the bookkeeping of their jobs too."""
    outcomes, stamp = [], now_ms()
    for run in runs:
        if run.event is None:
            outcomes.append(RunOutcome(run.event_id, run.status, "gone"))
            continue
        job = "done" if run.job_done else "again" if run.retry_in is None else "retry"
        retry_at = stamp + int((run.retry_in or 0) * 1000)
        records = {action.key: run.event.actions[action.key] for action in run.changed}
        outcomes.append(RunOutcome(run.event_id, run.status, job, run.error, retry_at, records))
    ledger = deps.ledger.entries(batch.recorded)
    await deps.store.queue_settle(pipe, outcomes, queue=queue, ledger=ledger, ledger_ttl=deps.ledger.ttl_seconds)
    batch.stats.queue(pipe)


def _age_origin(event: StoredEvent) -> float:
    """Epoch seconds the retry age counts from: receipt, or the latest replay (a fresh start)."""
    origin = event.received_at / 1000
    for replay in event.replays:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            origin = max(origin, datetime.fromisoformat(str(replay["at"]).replace("Z", "+00:00")).timestamp())
    return origin


def _give_up_exhausted(settings: Settings, event: StoredEvent, planned: list[PlannedAction]) -> list[PlannedAction]:
    """Mark dead the pending actions past their attempts or age; returns them."""
    too_old = time.time() - _age_origin(event) > settings.retry_max_age_seconds
    given_up = []
    for action in planned:
        record = event.actions[action.key]
        exhausted = record["status"] == "retrying" and record["failures"] >= settings.retry_max_attempts
        if record["status"] in _PENDING and (exhausted or too_old):
            why = f"{record['failures']} failures" if exhausted else f"older than {settings.retry_max_age_seconds:g}s"
            record.update(status="dead", last_error=f"gave up after {why}: {record['last_error']}")
            given_up.append(action)
    return given_up


def _retry_delay(
    settings: Settings, event: StoredEvent, planned: list[PlannedAction], waits: list[float], stats: StatsBuffer
) -> float:
    """When to come back: backoff after failures, never sooner than a server or a limiter asked."""
    failing = [event.actions[a.key] for a in planned if event.actions[a.key]["status"] == "retrying"]
    attempt = max((record["failures"] for record in failing), default=0)
    delay = max(waits)
    if attempt:
        delay = backoff_seconds(
            attempt,
            base=settings.retry_base_seconds,
            cap=settings.retry_cap_seconds,
            retry_after=delay or None,
            retry_after_cap=settings.retry_after_max_seconds,
        )
        for record in failing:
            stats.incr("retries", {"destination": record["destination"]})
    return delay
