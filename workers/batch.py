"""One job's delivery batch: load its events, plan their actions, deliver, and say what each came to.

A batch costs a fixed number of Redis round trips, not a number per event: one script starts every
run and reads the events (``workers.runs``), one ``MGET`` reads the ledger, the destination gates
and the Magnews merge batcher coalesce what the events send, and one transaction records every
outcome and the new ledger entries (``workers.jobs``); the process's own series count as it goes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.process_metrics import WorkerSeries
from bridge.store.records import StoredEvent
from config.rules import RuleSet
from config.settings import Settings
from workers.delivery import FINAL_ACTION_STATUSES, Batch, DeliveryContext, Sender, deliver_action, new_record
from workers.ledger import Ledger
from workers.mapping import PlannedAction, plan_actions
from workers.retry import PENDING_STATUSES, crash_outcome, give_up_exhausted, retry_delay
from workers.runs import SKIPPED, DeliveryRuns

__all__ = ["EventRun", "WorkerDeps", "deliver_batch"]


@dataclass(slots=True)
class WorkerDeps:
    """What a delivery job needs, built once per worker process (``ctx["deps"]``)."""

    settings: Settings
    runs: DeliveryRuns
    ledger: Ledger
    metrics: WorkerSeries
    rules: RuleSet
    senders: dict[str, Sender]
    template_context: dict[str, Any]


@dataclass(slots=True)
class EventRun:
    """One event's run and what it came to. ``retry_in`` set: it comes back after that many seconds;
    ``status == "queued"``: the run was interrupted and its job runs it again; ``skipped``: another
    job owns the event."""

    event_id: str
    job_try: int = 0
    event: StoredEvent | None = None
    planned: list[PlannedAction] = field(default_factory=list)
    changed: list[PlannedAction] = field(default_factory=list)
    status: str = "queued"
    retry_in: float | None = None
    error: str = ""
    skipped: bool = False

    @property
    def done(self) -> bool:
        return self.retry_in is None and self.status != "queued"


async def deliver_batch(deps: WorkerDeps, job_id: str, runs: list[EventRun], batch: Batch) -> None:
    """Run the delivery of each event of the job's batch, appending an ``EventRun`` per event to
    ``runs`` with its outcome.

    Should the runs not start (Redis), this raises and nothing changed. Should the batch fail once
    started (Redis, a bug), each run not yet decided retries with backoff.
    """
    begun = await deps.runs.begin(job_id)
    runs += [EventRun(event_id) for event_id, _ in begun]
    events = [event for _, event in begun]
    try:
        await _deliver_batch(deps, job_id, runs, events, batch)
    except Exception as exc:
        batch.log.exception("delivery batch crashed", events=len(runs))
        for run in runs:
            if run.status == "queued" and not run.skipped:
                _crashed(deps.settings, run, exc)


async def _deliver_batch(
    deps: WorkerDeps, job_id: str, runs: list[EventRun], events: list[StoredEvent | str | None], batch: Batch
) -> None:
    for run, event in zip(runs, events, strict=True):
        if event is SKIPPED:
            run.skipped = True
            continue
        if not isinstance(event, StoredEvent):
            run.status = "missing"
            batch.log.warning("event not found", event_id=run.event_id, reason="expired or purged before delivery")
            continue
        run.event, run.job_try = event, event.tries
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
    request_keys = [request.key for run in active for action in run.planned for request in action.requests]
    batch.delivered.update(await deps.ledger.delivered(request_keys))
    try:
        async with asyncio.timeout(deps.settings.job_timeout_seconds):
            await asyncio.gather(*(_deliver_guarded(deps, job_id, run, batch) for run in active))
    except TimeoutError as exc:
        for run in active:
            if run.status == "queued":  # still running when the time was up
                _crashed(deps.settings, run, exc)


async def _deliver_guarded(deps: WorkerDeps, job_id: str, run: EventRun, batch: Batch) -> None:
    """One event's deliveries; a crash becomes a retry and leaves the others of the batch alone."""
    assert run.event is not None
    structlog.contextvars.bind_contextvars(
        event_id=run.event_id, job_id=job_id, source=run.event.source, type=run.event.type
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
        if record["status"] in FINAL_ACTION_STATUSES:
            # Delivered, unmatched or superseded need nothing; dead waits for a replay (which resets it).
            event.actions[action.key] = record
            continue
        outcome = await deliver_action(action, record, send=deps.senders[action.destination], run=context)
        if outcome.retry_after is not None:
            waits.append(outcome.retry_after)
        event.actions[action.key] = outcome.record
        run.changed.append(action)
    planned = [action.key for action in run.planned]
    if waits:
        given_up = set(give_up_exhausted(deps.settings, event, planned))
        run.changed += [action for action in run.planned if action.key in given_up]
        if any(event.actions[key]["status"] in PENDING_STATUSES for key in planned):
            failing = [event.actions[key] for key in planned if event.actions[key]["status"] == "retrying"]
            run.retry_in = retry_delay(
                deps.settings,
                failing,
                waits,
                lambda destination: batch.metrics.retries.labels(destination).inc(),
            )
            run.status = "retrying"
            batch.log.info("event retrying", delay=round(run.retry_in, 3))
            return
    dead = [event.actions[key] for key in planned if event.actions[key]["status"] == "dead"]
    run.status = "failed" if dead else "delivered"
    for record in dead:
        batch.metrics.dead_letters.labels(record["destination"]).inc()
        batch.log.warning(
            "dead letter", action=record["key"], destination=record["destination"], error=record["last_error"]
        )


def _crashed(settings: Settings, run: EventRun, exc: BaseException) -> None:
    crash = crash_outcome(settings, run.job_try, exc)
    run.retry_in = crash.retry_in
    run.status = "retrying" if crash.retry_in is not None else "failed"
    run.error = crash.error
