"""Deliver the planned actions of one event run, and record every attempt on the action.

Each request is sent only if the ledger does not hold its key; success adds it to the ledger entries
that the run's closing pipeline writes (``DeliveryContext.recorded``). A
transient failure leaves the action ``retrying`` and counts toward its retry limit; a deferral
(rate limit, concurrency cap, open circuit) leaves it ``deferred`` and counts nothing; a permanent
failure, or an action that could not be rendered, makes it ``dead``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from bridge.events import format_time
from bridge.stats import StatsBuffer
from config.errors import DeliveryDeferred, DeliveryError, TransientDeliveryError
from workers.http import ApiResponse
from workers.mapping import PlannedAction, Request

__all__ = ["ActionOutcome", "DeliveryContext", "Sender", "deliver_action", "new_record"]

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
class DeliveryContext:
    """What every action of one event's run shares; ``delivered`` and ``recorded`` are the batch's."""

    stats: StatsBuffer
    delivered: dict[str, dict[str, Any]]  # the ledger: request key -> entry, read at the run's start
    recorded: dict[str, dict[str, Any]]  # entries of this batch's deliveries, for the ledger
    job_try: int
    received_at_ms: int
    log: Any = _log  # a logger bound once for the batch: cheaper per line than the module's proxy


async def deliver_action(
    action: PlannedAction, record: dict[str, Any], *, send: Sender, run: DeliveryContext
) -> ActionOutcome:
    """Send what the ledger lacks; update ``record`` in place and say whether to come back."""
    log = run.log.bind(action=action.key, rule=action.rule, destination=action.destination)
    labels = {"destination": action.destination}
    if action.error is not None:
        record.update(status="dead", last_error=action.error)
        _attempt(record, job_try=run.job_try, outcome="invalid", error=action.error)
        run.stats.incr("deliveries", labels | {"outcome": "invalid"})
        log.warning("action invalid", error=action.error)
        return ActionOutcome(record)
    for request in action.requests:
        if request.key in run.delivered:
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
            run.stats.incr("deliveries", labels | {"outcome": outcome})
            log.warning("delivery failed", request=request.key, outcome=outcome, status=exc.status,
                        error=exc.message, job_try=run.job_try)  # fmt: skip
            if isinstance(exc, TransientDeliveryError):
                return ActionOutcome(record, retry_after=exc.retry_after or 0.0)
            return ActionOutcome(record)
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        entry = {"status": response.status, "at": format_time(datetime.now(UTC))}
        run.delivered[request.key] = run.recorded[request.key] = entry
        record["last_response"] = {"status": response.status, "body": response.text}
        _attempt(record, job_try=run.job_try, request=request.key, outcome="delivered", status=response.status,
                 ms=elapsed)  # fmt: skip
        run.stats.incr("deliveries", labels | {"outcome": "delivered"})
        run.stats.observe("delivery_latency_seconds", time.time() - run.received_at_ms / 1000, labels)
        log.info("delivered", request=request.key, status=response.status, ms=elapsed, job_try=run.job_try)
    record.update(status="delivered", last_error=None)
    return ActionOutcome(record)
