"""The arq job ``deliver_event``: load the event, plan its actions, deliver, record the outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from arq import Retry

from bridge.store import EventStore
from config.rules import RuleSet
from config.settings import Settings
from workers.delivery import Sender, deliver_action, new_record
from workers.ledger import Ledger
from workers.mapping import plan_actions
from workers.retry import backoff_seconds

__all__ = ["WorkerDeps", "deliver_event"]

_log = structlog.get_logger("magbridge.jobs")


@dataclass(slots=True)
class WorkerDeps:
    """What a delivery job needs, built once per worker process (``ctx["deps"]``)."""

    settings: Settings
    store: EventStore
    ledger: Ledger
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
    await deps.store.finish(event_id, "failed", dead=True, counter="failed", error=error)
    return "failed"


async def _run(deps: WorkerDeps, event_id: str, job_try: int) -> str:
    event = await deps.store.get(event_id)
    if event is None:
        _log.warning("event not found", reason="expired or purged before delivery")
        return "missing"
    structlog.contextvars.bind_contextvars(source=event.source, type=event.type)
    await deps.store.start_run(event_id)
    planned = plan_actions(deps.rules, event, deps.template_context)
    if not planned:
        await deps.store.finish(event_id, "ignored", dead=False, counter="ignored")
        _log.info("event ignored", reason="no rule matches")
        return "ignored"

    delivered = await deps.ledger.delivered([request.key for action in planned for request in action.requests])
    retry_after: list[float | None] = []
    for action in planned:
        record = event.actions.get(action.key) or new_record(action)
        if record["status"] in ("delivered", "dead"):
            # Delivered needs nothing; dead waits for a replay (which resets it to pending).
            continue
        outcome = await deliver_action(
            action,
            record,
            send=deps.senders[action.destination],
            ledger=deps.ledger,
            delivered=delivered,
            job_try=job_try,
        )
        if outcome.transient is not None:
            retry_after.append(outcome.transient.retry_after)
        await deps.store.save_action(event_id, action.key, outcome.record)
        event.actions[action.key] = outcome.record

    settings = deps.settings
    if retry_after and job_try < settings.retry_max_attempts:
        delay = backoff_seconds(
            job_try,
            base=settings.retry_base_seconds,
            cap=settings.retry_cap_seconds,
            retry_after=max((value for value in retry_after if value is not None), default=None),
        )
        await deps.store.set_status(event_id, "retrying")
        _log.info("event retrying", job_try=job_try, delay=round(delay, 2))
        raise Retry(defer=delay)
    if retry_after:
        for action in planned:
            record = event.actions[action.key]
            if record["status"] == "retrying":
                record["status"] = "dead"
                record["last_error"] = f"gave up after {job_try} tries: {record['last_error']}"
                await deps.store.save_action(event_id, action.key, record)
    dead = any(event.actions[action.key]["status"] == "dead" for action in planned)
    status = "failed" if dead else "delivered"
    await deps.store.finish(event_id, status, dead=dead, counter=status)
    (_log.warning if dead else _log.info)("event " + status, actions=len(planned))
    return status
