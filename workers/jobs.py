"""The arq job ``deliver_event``: load the event, plan its actions, deliver, record the outcome.

An action that failed transiently, or was deferred by its destination's limits, makes the job
reschedule itself (arq ``Retry``) after a backoff; only those actions are tried again. An action
gives up (dead letter) after ``retry_max_attempts`` failures or when the event is older than
``retry_max_age_seconds``; deferrals alone never exhaust attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from arq import Retry
from redis.asyncio.client import Pipeline

from bridge.stats import Stats, StatsBuffer
from bridge.store import EventStore, StoredEvent
from config.rules import RuleSet
from config.settings import Settings
from workers.delivery import DeliveryContext, Sender, deliver_action, new_record
from workers.ledger import Ledger
from workers.mapping import PlannedAction, plan_actions
from workers.retry import backoff_seconds

__all__ = ["WorkerDeps", "deliver_event"]

_log = structlog.get_logger("magbridge.jobs")
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


async def deliver_event(ctx: dict[str, Any], event_id: str) -> str:
    """Deliver every action of one event; returns the event's status."""
    deps: WorkerDeps = ctx["deps"]
    job_try: int = ctx.get("job_try", 1)
    structlog.contextvars.bind_contextvars(event_id=event_id, job_id=ctx.get("job_id"))
    try:
        return await _run(deps, event_id, job_try)
    except Retry:
        raise
    except asyncio.CancelledError:
        # Shutdown handed the job back to the queue: say so instead of "delivering" forever.
        await asyncio.shield(deps.store.set_status(event_id, "queued"))
        raise
    except Exception as exc:
        # A bug or an unreachable Redis must not leave the event half-done and forgotten:
        # retry like a transient failure, then dead-letter the event with the error.
        _log.exception("delivery job crashed", job_try=job_try)
        return await _crashed(deps, event_id, job_try, exc)
    finally:
        structlog.contextvars.unbind_contextvars("event_id", "job_id", "source", "type")


async def _crashed(deps: WorkerDeps, event_id: str, job_try: int, exc: Exception) -> str:
    settings = deps.settings
    if job_try < settings.retry_max_attempts:
        raise Retry(defer=backoff_seconds(job_try, base=settings.retry_base_seconds, cap=settings.retry_cap_seconds))
    error = f"internal error after {job_try} tries: {type(exc).__name__}: {exc}"
    await deps.store.finish(event_id, "failed", dead=True, error=error)
    return "failed"


async def _run(deps: WorkerDeps, event_id: str, job_try: int) -> str:
    event = await deps.store.get(event_id)
    if event is None:
        _log.warning("event not found", reason="expired or purged before delivery")
        return "missing"
    structlog.contextvars.bind_contextvars(source=event.source, type=event.type)
    planned = plan_actions(deps.rules, event, deps.template_context)
    keys = [request.key for action in planned for request in action.requests]
    # One round trip: what was delivered already, and the run's start.
    async with deps.store.redis.pipeline(transaction=False) as pipe:
        deps.ledger.queue_lookup(pipe, keys)
        deps.store.queue_start_run(pipe, event_id)
        ledger_values, *_ = await pipe.execute()
    if not planned:
        await deps.store.finish(event_id, "ignored", dead=False)
        _log.info("event ignored", reason="no rule matches")
        return "ignored"

    run = DeliveryContext(
        ledger=deps.ledger,
        stats=StatsBuffer(),
        delivered=deps.ledger.parse_lookup(keys, ledger_values),
        job_try=job_try,
        received_at_ms=event.received_at,
    )
    waits: list[float] = []
    changed: list[PlannedAction] = []
    for action in planned:
        record = event.actions.get(action.key) or new_record(action)
        if record["status"] in ("delivered", "dead"):
            # Delivered needs nothing; dead waits for a replay (which resets it to pending).
            event.actions[action.key] = record
            continue
        outcome = await deliver_action(action, record, send=deps.senders[action.destination], run=run)
        if outcome.retry_after is not None:
            waits.append(outcome.retry_after)
        event.actions[action.key] = outcome.record
        changed.append(action)

    delay = None
    if waits:
        changed += _give_up_exhausted(deps.settings, event, planned)
        if any(event.actions[action.key]["status"] in _PENDING for action in planned):
            delay = _retry_delay(deps.settings, event, planned, waits, run.stats)
    # One round trip: every action record, the outcome and the counters.
    async with deps.store.redis.pipeline(transaction=False) as pipe:
        for action in changed:
            record = event.actions[action.key]
            deps.store.queue_save_action(pipe, event_id, action.key, record, expire=delay is not None)
        status = "retrying" if delay is not None else _queue_outcome(deps, pipe, event, planned, run.stats)
        if delay is not None:
            deps.store.queue_status(pipe, event_id, "retrying")
        run.stats.queue(pipe)
        await pipe.execute()
    if delay is not None:
        _log.info("event retrying", delay=round(delay, 3))
        raise Retry(defer=delay)
    return status


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


def _queue_outcome(
    deps: WorkerDeps, pipe: Pipeline, event: StoredEvent, planned: list[PlannedAction], stats: StatsBuffer
) -> str:
    dead = [event.actions[action.key] for action in planned if event.actions[action.key]["status"] == "dead"]
    status = "failed" if dead else "delivered"
    deps.store.queue_finish(pipe, event.id, status, dead=bool(dead))
    for record in dead:
        stats.incr("dead_letters", {"destination": record["destination"]})
        _log.warning("dead letter", action=record["key"], destination=record["destination"], error=record["last_error"])
    if not dead:
        # Each delivery attempt has its own info line already; this one is for debugging.
        _log.debug("event delivered", actions=len(planned))
    return status
