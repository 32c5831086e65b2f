"""Deliver the planned actions of one event run, and record every attempt on the action.

Each request is sent only if the ledger does not hold its key; success writes the ledger. A
transient failure leaves the action ``retrying`` (the job schedules the retry); a permanent one,
or an action that could not be rendered, makes it ``dead``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from bridge.events import format_time
from config.errors import DeliveryError, TransientDeliveryError
from workers.http import ApiResponse
from workers.ledger import Ledger
from workers.mapping import PlannedAction, Request

__all__ = ["ActionOutcome", "Sender", "deliver_action", "new_record"]

Sender = Callable[[Request], Awaitable[ApiResponse]]
_KEPT_ATTEMPTS = 20
_log = structlog.get_logger("magbridge.delivery")


@dataclass(slots=True)
class ActionOutcome:
    record: dict[str, Any]
    transient: TransientDeliveryError | None = None


def new_record(action: PlannedAction) -> dict[str, Any]:
    return {
        "key": action.key,
        "rule": action.rule,
        "index": action.index,
        "kind": action.kind,
        "destination": action.destination,
        "status": "pending",
        "requests": [request.key for request in action.requests],
        "attempts": [],
        "last_error": None,
        "last_response": None,
    }


def _attempt(record: dict[str, Any], **fields: Any) -> None:
    attempts = record["attempts"]
    attempts.append({"at": format_time(datetime.now(UTC)), **fields})
    del attempts[:-_KEPT_ATTEMPTS]


async def deliver_action(
    action: PlannedAction,
    record: dict[str, Any],
    *,
    send: Sender,
    ledger: Ledger,
    delivered: dict[str, dict[str, Any]],
    job_try: int,
) -> ActionOutcome:
    """Send what the ledger lacks; update ``record`` in place and return it with any transient error."""
    log = _log.bind(action=action.key, rule=action.rule, destination=action.destination)
    if action.error is not None:
        record.update(status="dead", last_error=action.error)
        _attempt(record, job_try=job_try, outcome="invalid", error=action.error)
        log.warning("action invalid", error=action.error)
        return ActionOutcome(record)
    for request in action.requests:
        if request.key in delivered:
            continue
        started = time.perf_counter()
        try:
            response = await send(request)
        except DeliveryError as exc:
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            transient = isinstance(exc, TransientDeliveryError)
            outcome = "transient" if transient else "permanent"
            record.update(
                status="retrying" if transient else "dead",
                last_error=exc.message,
                last_response={"status": exc.status, "body": exc.body},
            )
            _attempt(
                record,
                job_try=job_try,
                request=request.key,
                outcome=outcome,
                status=exc.status,
                error=exc.message,
                ms=elapsed,
            )
            log.warning(
                "delivery failed",
                request=request.key,
                outcome=outcome,
                status=exc.status,
                error=exc.message,
                job_try=job_try,
            )
            return ActionOutcome(record, exc if isinstance(exc, TransientDeliveryError) else None)
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        entry = {"status": response.status, "at": format_time(datetime.now(UTC))}
        await ledger.record(request.key, entry)
        delivered[request.key] = entry
        record["last_response"] = {"status": response.status, "body": response.text}
        _attempt(
            record,
            job_try=job_try,
            request=request.key,
            outcome="delivered",
            status=response.status,
            ms=elapsed,
        )
        log.info("delivered", request=request.key, status=response.status, ms=elapsed, job_try=job_try)
    record.update(status="delivered", last_error=None)
    return ActionOutcome(record)
