"""Deliver the planned actions of one event run, and record every attempt on the action.

Each request is sent only if the ledger does not hold its key; success adds it to the ledger entries
that the batch's closing transaction writes (``Batch.recorded``). A
transient failure leaves the action ``retrying`` and counts toward its retry limit; a deferral
(rate limit, concurrency cap, open circuit) leaves it ``deferred`` and counts nothing; a permanent
failure, or an action that could not be rendered, makes it ``dead``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from bridge.events import format_time
from bridge.store.stats import StatsBuffer
from config.errors import DeliveryDeferred, DeliveryError, TransientDeliveryError
from workers.destinations.http import ApiResponse
from workers.mapping import PlannedAction, Request

__all__ = ["ActionOutcome", "Batch", "DeliveryContext", "Sender", "deliver_action", "new_record"]

Sender = Callable[[Request], Awaitable[ApiResponse]]
_KEPT_ATTEMPTS = 20
_log = structlog.get_logger("magbridge.delivery")


@dataclass(slots=True)
class ActionOutcome:
    record: dict[str, Any]
    retry_after: float | None = None  # set when the action must be tried again


def new_record(action: PlannedAction) -> dict[str, Any]:
    return {
        "key": action.key,
        "rule": action.rule,
        "index": action.index,
        "kind": action.kind,
        "destination": action.destination,
        "status": "pending",
        "requests": [request.key for request in action.requests],
        "failures": 0,
        "attempts": [],
        "last_error": None,
        "last_response": None,
    }


def _attempt(record: dict[str, Any], **fields: Any) -> None:
    attempts = record["attempts"]
    attempts.append({"at": format_time(datetime.now(UTC)), **fields})
    del attempts[:-_KEPT_ATTEMPTS]


@dataclass(slots=True)
class Batch:
    """What the runs of one batch share."""

    stats: StatsBuffer = field(default_factory=StatsBuffer)
    # The ledger: request key -> entry, as read at the batch's start, and the entries its deliveries add.
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)
    recorded: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Bound once for the batch: cheaper per line than the module-level proxy, which binds anew each time.
    log: FilteringBoundLogger = field(default_factory=lambda: _log.bind())


@dataclass(slots=True)
class DeliveryContext:
    """What every action of one event's run shares."""

    batch: Batch
    job_try: int
    received_at_ms: int


async def deliver_action(
    action: PlannedAction, record: dict[str, Any], *, send: Sender, run: DeliveryContext
) -> ActionOutcome:
    """Send what the ledger lacks; update ``record`` in place and say whether to come back."""
    batch = run.batch
    log = batch.log.bind(action=action.key, rule=action.rule, destination=action.destination)
    labels = {"destination": action.destination}
    if action.error is not None:
        record.update(status="dead", last_error=action.error)
        _attempt(record, job_try=run.job_try, outcome="invalid", error=action.error)
        batch.stats.incr("deliveries", labels | {"outcome": "invalid"})
        log.warning("action invalid", error=action.error)
        return ActionOutcome(record)
    for request in action.requests:
        if request.key in batch.delivered:
            continue
        started = time.perf_counter()
        try:
            response = await send(request)
        except DeliveryDeferred as exc:
            record.update(status="deferred", last_error=exc.reason)
            log.debug("delivery deferred", reason=exc.reason, retry_after=round(exc.retry_after, 2))
            return ActionOutcome(record, retry_after=exc.retry_after)
        except DeliveryError as exc:
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            transient = isinstance(exc, TransientDeliveryError)
            outcome = "transient" if transient else "permanent"
            record.update(
                status="retrying" if transient else "dead",
                last_error=exc.message,
                last_response={"status": exc.status, "body": exc.body},
            )
            record["failures"] = record.get("failures", 0) + int(transient)
            _attempt(record, job_try=run.job_try, request=request.key, outcome=outcome, status=exc.status,
                     error=exc.message, ms=elapsed)  # fmt: skip
            batch.stats.incr("deliveries", labels | {"outcome": outcome})
            log.warning("delivery failed", request=request.key, outcome=outcome, status=exc.status,
                        error=exc.message, job_try=run.job_try)  # fmt: skip
            if isinstance(exc, TransientDeliveryError):
                return ActionOutcome(record, retry_after=exc.retry_after or 0.0)
            return ActionOutcome(record)
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        entry = {"status": response.status, "at": format_time(datetime.now(UTC))}
        batch.delivered[request.key] = batch.recorded[request.key] = entry
        record["last_response"] = {"status": response.status, "body": response.text}
        _attempt(record, job_try=run.job_try, request=request.key, outcome="delivered", status=response.status,
                 ms=elapsed)  # fmt: skip
        batch.stats.incr("deliveries", labels | {"outcome": "delivered"})
        batch.stats.observe("delivery_latency_seconds", time.time() - run.received_at_ms / 1000, labels)
        log.info("delivered", request=request.key, status=response.status, ms=elapsed, job_try=run.job_try)
    record.update(status="delivered", last_error=None)
    return ActionOutcome(record)
