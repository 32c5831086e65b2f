"""The retry policy: when a run comes back, and when an action or an event gives up.

An action that failed transiently, or was deferred by its destination's limits, makes its event
come back after a backoff; only those actions are tried again. An action gives up (dead letter)
after ``retry_max_attempts`` failures or when the event is older than ``retry_max_age_seconds``;
deferrals alone never exhaust attempts. A run that crashes (a bug, a timeout) is retried the same
way and dead-lettered with the error once its tries are spent.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.store.records import StoredEvent
from config.settings import Settings

__all__ = [
    "PENDING_STATUSES",
    "Crash",
    "age_origin",
    "backoff_seconds",
    "crash_outcome",
    "give_up_exhausted",
    "retry_delay",
]

PENDING_STATUSES = ("retrying", "deferred")
"""Action statuses that make their event come back."""


def backoff_seconds(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    retry_after_cap: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before try ``attempt + 1`` (``attempt`` counts from 1).

    Full jitter (a uniform draw up to the exponential bound) spreads retries of many workers; a
    server's ``Retry-After`` is a floor, itself capped (``retry_after_cap``, default ``cap``) so one
    bad header cannot park a job for days.
    """
    bound = min(cap, base * 2 ** max(0, attempt - 1))
    delay = (rng or random).uniform(0, bound)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap if retry_after_cap is None else retry_after_cap))
    return delay


@dataclass(frozen=True, slots=True)
class Crash:
    """A run that crashed: come back in ``retry_in`` seconds, or (``None``) fail with ``error``."""

    retry_in: float | None
    error: str = ""


def crash_outcome(settings: Settings, tries: int, exc: BaseException) -> Crash:
    """Retry like a transient failure, then give up with the error once ``tries`` are spent."""
    if tries < settings.retry_max_attempts:
        return Crash(backoff_seconds(max(tries, 1), base=settings.retry_base_seconds, cap=settings.retry_cap_seconds))
    return Crash(None, f"internal error after {tries} tries: {type(exc).__name__}: {exc}")


def age_origin(event: StoredEvent) -> float:
    """Epoch seconds the retry age counts from: receipt, or the latest replay (a fresh start)."""
    origin = event.received_at / 1000
    for replay in event.replays:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            origin = max(origin, datetime.fromisoformat(str(replay["at"]).replace("Z", "+00:00")).timestamp())
    return origin


def give_up_exhausted(settings: Settings, event: StoredEvent, action_keys: list[str]) -> list[str]:
    """Mark dead the pending actions past their attempts or age; returns their keys."""
    too_old = time.time() - age_origin(event) > settings.retry_max_age_seconds
    given_up = []
    for key in action_keys:
        record = event.actions[key]
        exhausted = record["status"] == "retrying" and record["failures"] >= settings.retry_max_attempts
        if record["status"] in PENDING_STATUSES and (exhausted or too_old):
            why = f"{record['failures']} failures" if exhausted else f"older than {settings.retry_max_age_seconds:g}s"
            record.update(status="dead", last_error=f"gave up after {why}: {record['last_error']}")
            given_up.append(key)
    return given_up


def retry_delay(
    settings: Settings, failing: list[dict[str, Any]], waits: list[float], count_retry: Callable[[str], None]
) -> float:
    """When to come back: backoff after failures (the ``retrying`` records in ``failing``), never
    sooner than a server or a limiter asked (``waits``). ``count_retry(destination)`` per failure."""
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
            count_retry(record["destination"])
    return delay
