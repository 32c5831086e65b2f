"""Deliver the planned actions of one event run, and record every attempt on the action.

Each request is sent only if the ledger does not hold its key; success adds it to the ledger entries
that the batch's closing transaction writes (``Batch.recorded``). A
transient failure leaves the action ``retrying`` and counts toward its retry limit; a deferral
(rate limit, concurrency cap, open circuit) leaves it ``deferred`` and counts nothing; a permanent
failure, or an action that could not be rendered, makes it ``dead``. A merge that needs no request
ends ``unmatched`` (no contact to merge into) or ``superseded`` (a newer merge for the contact went
first): final, neither delivered nor a dead letter, with a ``note`` saying why. A 401/403 pauses the
destination (``DestinationPaused``): the refusal is recorded as an attempt (outcome ``refused``) but
the action is ``deferred`` and counts nothing, so expired or revoked credentials never dead-letter.

A transient failure after which the request may have reached the destination (a timeout, a dropped
connection, a 5xx) puts the request's key in the action's ``unsure`` list: its next attempt is sent
with ``read_back=True``, so a destination whose API cannot deduplicate a resend (MagicBell) first
looks for the earlier attempt's effect, and records ``confirmed`` when it finds it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import structlog
from structlog.typing import FilteringBoundLogger

from bridge.events import format_time
from bridge.process_metrics import WorkerSeries
from config.errors import (
    ActionSkipped,
    DeliveryDeferred,
    DeliveryError,
    DestinationPaused,
    MagnewsAuthError,
    TransientDeliveryError,
)
from workers.destinations.http import ApiResponse
from workers.mapping import PlannedAction, Request

__all__ = [
    "FINAL_ACTION_STATUSES",
    "ActionOutcome",
    "Batch",
    "DeliveryContext",
    "Reported",
    "Sender",
    "deliver_action",
    "new_record",
]


class Sender(Protocol):
    """Sends one request; ``read_back`` says an earlier attempt's outcome is unknown (see the module doc)."""

    def __call__(self, request: Request, *, read_back: bool = False) -> Awaitable[ApiResponse]: ...


@dataclass(frozen=True, slots=True)
class Reported(ApiResponse):
    """A success that says more than its status: ``outcome`` ``confirmed`` when the effect was found by
    reading it back (an earlier attempt got through), and the destination's own delivery status."""

    outcome: str = "delivered"
    vendor_status: dict[str, Any] | None = None


def _maybe_sent(exc: TransientDeliveryError) -> bool:
    """Whether the failed request may have reached the destination and taken effect: not when the
    connection was never made, nor for 408 or 429 (the server says it did not process it)."""
    if isinstance(exc, MagnewsAuthError) or exc.status in (408, 429):
        return False
    return not isinstance(exc.__cause__, aiohttp.ClientConnectorError)


_KEPT_ATTEMPTS = 20
# Of a successful answer's body: its start only. Failures keep theirs whole (up to 2,000 characters,
# workers.destinations.http) for the dead letter; a success's use is in its status and vendor_status,
# and a whole MagicBell broadcast echoed back was ~40% of a delivered action's bytes in Redis.
_SUCCESS_BODY_KEPT = 200
FINAL_ACTION_STATUSES = ("delivered", "dead", "unmatched", "superseded")
"""Action statuses a run leaves alone: ``unmatched`` and ``superseded`` are final without a request
(``config.errors.ActionSkipped``); a replay without ``force`` tries ``dead`` and ``unmatched`` again."""
_log = structlog.get_logger("magbridge.delivery")


def _excerpt(body: str) -> str:
    return body if len(body) <= _SUCCESS_BODY_KEPT else body[:_SUCCESS_BODY_KEPT] + "…"


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

    metrics: WorkerSeries  # this process's series: attempts are counted as they happen
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
    if action.error is not None:
        record.update(status="dead", last_error=action.error)
        _attempt(record, job_try=run.job_try, outcome="invalid", error=action.error)
        batch.metrics.deliveries.labels(action.destination, "invalid").inc()
        log.warning("action invalid", error=action.error)
        return ActionOutcome(record)
    for request in action.requests:
        if request.key in batch.delivered:
            continue
        started = time.perf_counter()
        unsure = record.get("unsure") or []
        try:
            # Only when needed, so a sender that knows no read-back (a test's stub) still fits.
            response = await (send(request, read_back=True) if request.key in unsure else send(request))
        except DestinationPaused as exc:
            # Sent and refused (401/403): recorded, yet no failure counted; the action waits for the probe.
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            record.update(status="deferred", last_error=exc.reason)
            record["last_response"] = {"status": exc.status, "body": exc.body}
            _attempt(record, job_try=run.job_try, request=request.key, outcome="refused", status=exc.status,
                     error=exc.reason, ms=elapsed)  # fmt: skip
            batch.metrics.deliveries.labels(action.destination, "refused").inc()
            log.warning("delivery refused, destination paused", request=request.key, status=exc.status,
                        retry_after=round(exc.retry_after, 2), job_try=run.job_try)  # fmt: skip
            return ActionOutcome(record, retry_after=exc.retry_after)
        except DeliveryDeferred as exc:
            record.update(status="deferred", last_error=exc.reason)
            log.debug("delivery deferred", reason=exc.reason, retry_after=round(exc.retry_after, 2))
            return ActionOutcome(record, retry_after=exc.retry_after)
        except ActionSkipped as exc:
            # Final without a request: no contact to merge into, or a newer merge went first.
            record.update(status=exc.status, last_error=None, note=exc.note)
            _attempt(record, job_try=run.job_try, request=request.key, outcome=exc.status, note=exc.note)
            batch.metrics.deliveries.labels(action.destination, exc.status).inc()
            log.info("delivery skipped", request=request.key, outcome=exc.status, note=exc.note)
            return ActionOutcome(record)
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
            if isinstance(exc, TransientDeliveryError) and _maybe_sent(exc) and request.key not in unsure:
                record["unsure"] = [*unsure, request.key]
            _attempt(record, job_try=run.job_try, request=request.key, outcome=outcome, status=exc.status,
                     error=exc.message, ms=elapsed)  # fmt: skip
            batch.metrics.deliveries.labels(action.destination, outcome).inc()
            log.warning("delivery failed", request=request.key, outcome=outcome, status=exc.status,
                        error=exc.message, job_try=run.job_try)  # fmt: skip
            if isinstance(exc, TransientDeliveryError):
                return ActionOutcome(record, retry_after=exc.retry_after or 0.0)
            return ActionOutcome(record)
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        outcome = response.outcome if isinstance(response, Reported) else "delivered"
        entry = {"status": response.status, "at": format_time(datetime.now(UTC))}
        if outcome != "delivered":
            entry["outcome"] = outcome
        batch.delivered[request.key] = batch.recorded[request.key] = entry
        record["last_response"] = {"status": response.status, "body": _excerpt(response.text)}
        if isinstance(response, Reported) and response.vendor_status is not None:
            record["vendor_status"] = response.vendor_status
        if request.key in unsure:
            record["unsure"] = [key for key in unsure if key != request.key]
        _attempt(record, job_try=run.job_try, request=request.key, outcome=outcome, status=response.status,
                 ms=elapsed)  # fmt: skip
        batch.metrics.deliveries.labels(action.destination, "delivered").inc()
        batch.metrics.delivery_latency.labels(action.destination).observe(time.time() - run.received_at_ms / 1000)
        log.info("delivered", request=request.key, status=response.status, ms=elapsed, job_try=run.job_try,
                 outcome=outcome)  # fmt: skip
    record.update(status="delivered", last_error=None)
    record.pop("note", None)
    return ActionOutcome(record)
