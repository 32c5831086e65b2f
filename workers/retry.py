"""The retry schedule: exponential backoff with full jitter, never sooner than ``Retry-After``."""

from __future__ import annotations

import random

__all__ = ["backoff_seconds"]


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
