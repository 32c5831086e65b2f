"""Events in and out per minute for the whole bridge: what the console's overview shows.

- **In**: the events stored each minute, counted in the listing index (``keys.EVENTS_INDEX``, scored
  by receipt) with one ``ZCOUNT`` per minute: exact, O(log n), and nothing more to write.
- **Out**: the events that reached a final status (delivered, failed, ignored) each minute, in
  ``keys.finished(minute)`` (a hash, status -> count, kept ``KEEP_SECONDS``). The worker adds to it
  in the transaction that records the outcomes (``workers.runs``), so every worker counts into one
  place and a crash never counts an outcome that was not recorded.

Each process also counts its own finished events for Prometheus (``magbridge_events_finished``); this
is the bridge-wide figure a page can read in one round trip.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bridge.store import keys
from bridge.store.records import text

__all__ = ["KEEP_SECONDS", "Minute", "minute_of", "per_minute", "queue_finished"]

KEEP_SECONDS = 7200
_MINUTE_MS = 60_000


def minute_of(ms: int) -> int:
    """The epoch minute of an epoch-millisecond instant."""
    return ms // _MINUTE_MS


def queue_finished(pipe: Pipeline, statuses: Counter[str], now_ms: int) -> None:
    """Add to ``pipe`` the count of events that reached each final status now."""
    if not statuses:
        return
    key = keys.finished(minute_of(now_ms))
    for status, count in statuses.items():
        pipe.hincrby(key, status, count)
    pipe.expire(key, KEEP_SECONDS)


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute's traffic: events stored, and events finished by status."""

    minute: int
    received: int
    finished: dict[str, int] = field(default_factory=dict)

    @property
    def start_ms(self) -> int:
        return self.minute * _MINUTE_MS

    @property
    def out(self) -> int:
        return sum(self.finished.values())


async def per_minute(redis: aioredis.Redis, *, minutes: int, now_ms: int) -> list[Minute]:
    """The last ``minutes`` minutes, oldest first, the current (partial) minute last; one round trip."""
    current = minute_of(now_ms)
    span = range(current - minutes + 1, current + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for minute in span:
            start = minute * _MINUTE_MS
            pipe.zcount(keys.EVENTS_INDEX, start, start + _MINUTE_MS - 1)
        for minute in span:
            pipe.hgetall(keys.finished(minute))
        replies = await pipe.execute()
    received, finished = replies[: len(span)], replies[len(span) :]
    return [
        Minute(minute, int(count), {text(k): int(v) for k, v in raw.items()})
        for minute, count, raw in zip(span, received, finished, strict=True)
    ]
