"""Counters and histograms shared by every process through Redis, for ``/metrics`` to expose.

The web service and any number of workers add to the same keys, so one scrape of any web process
sees the whole bridge:

    keys.STATS              hash   ``name`` or ``name|label=value,label=value`` -> integer count
    keys.GAUGES             hash   ``name`` or ``name|labels`` -> float, the latest value set
    keys.HIST_PREFIX+name   hash   ``label=value,...|le`` -> count of observations in that bucket (not
                             cumulative), ``label=value,...|sum`` -> float sum, ``...|count``

Label values must come from small, known sets (destinations, outcomes, sources), never from events.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bridge.store import keys

__all__ = ["GAUGES_KEY", "HIST_PREFIX", "LATENCY_BUCKETS", "STATS_KEY", "Stats", "StatsBuffer", "series_name"]

STATS_KEY = keys.STATS
GAUGES_KEY = keys.GAUGES
HIST_PREFIX = keys.HIST_PREFIX
# Seconds: from a fast local delivery to a retried one.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


def series_name(name: str, labels: Mapping[str, str] | None = None) -> str:
    """``name|a=1,b=2`` with labels sorted, or ``name`` alone."""
    if not labels:
        return name
    return name + "|" + ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def _labels(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels)) if labels else ""


def _bucket(value: float) -> str:
    index = bisect.bisect_left(LATENCY_BUCKETS, value)
    return str(LATENCY_BUCKETS[index]) if index < len(LATENCY_BUCKETS) else "+Inf"


class StatsBuffer:
    """Counts and observations gathered in memory during a job, written in the job's last pipeline."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._hist: dict[tuple[str, str], list[float]] = {}

    def incr(self, name: str, labels: Mapping[str, str] | None = None, amount: int = 1) -> None:
        series = series_name(name, labels)
        self._counts[series] = self._counts.get(series, 0) + amount

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self._hist.setdefault((name, _labels(labels)), []).append(value)

    def queue(self, pipe: Pipeline) -> None:
        for series, amount in self._counts.items():
            pipe.hincrby(STATS_KEY, series, amount)
        for (name, prefix), values in self._hist.items():
            key = HIST_PREFIX + name
            for value in values:
                pipe.hincrby(key, f"{prefix}|{_bucket(value)}", 1)
            pipe.hincrbyfloat(key, f"{prefix}|sum", sum(values))
            pipe.hincrby(key, f"{prefix}|count", len(values))
        self._counts.clear()
        self._hist.clear()


class Stats:
    """Writes counters and histogram observations; a pipeline per call keeps it to one round trip."""

    def __init__(self, redis: aioredis.Redis):
        self._redis = redis

    async def incr(self, name: str, labels: Mapping[str, str] | None = None, amount: int = 1) -> None:
        await self._redis.hincrby(STATS_KEY, series_name(name, labels), amount)  # type: ignore[misc]

    async def set_gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        await self._redis.hset(GAUGES_KEY, series_name(name, labels), str(value))  # type: ignore[misc]

    async def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        prefix = _labels(labels)
        key = HIST_PREFIX + name
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, f"{prefix}|{_bucket(value)}", 1)
            pipe.hincrbyfloat(key, f"{prefix}|sum", value)
            pipe.hincrby(key, f"{prefix}|count", 1)
            await pipe.execute()
