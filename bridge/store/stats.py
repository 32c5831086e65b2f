"""The few figures kept in Redis, each because no single process can hold it.

Counters and histograms live in each process (``bridge.process_metrics``). What stays in Redis:

    keys.STATS   hash  ``name|label=value,...`` -> integer, added to by a script or a transaction:
                 ``received|source=..``, ``duplicates|source=..``  (``ingest.lua``, in the call that stores
                 the events, so they are exact across processes and restarts: ``magbridge demo``
                 checks its summary against them);
                 ``replays|mode=..,forced=..``  (``bridge.store.replay``: the admin API and
                 ``magbridge replay``, a command that has no ``/metrics`` of its own)
    keys.GAUGES  hash  ``name|labels`` -> float, the latest value, set by whichever process saw it and
                 true for the whole bridge: ``destination_paused|destination=..`` (the gates' script),
                 ``magnify_lag_seconds`` and ``magnify_motions_unlisted`` (the last Magnify poll,
                 whichever worker ran it; a per-process gauge would keep a stale value on the others)

``bridge.web.metrics`` exports ``replays`` and every gauge with ``scope="queue"``.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis.asyncio as aioredis

from bridge.store import keys

__all__ = ["GAUGES_KEY", "STATS_KEY", "SharedGauges", "series_name"]

STATS_KEY = keys.STATS
GAUGES_KEY = keys.GAUGES


def series_name(name: str, labels: Mapping[str, str] | None = None) -> str:
    """``name|a=1,b=2`` with labels sorted, or ``name`` alone."""
    if not labels:
        return name
    return name + "|" + ",".join(f"{key}={labels[key]}" for key in sorted(labels))


class SharedGauges:
    """Sets a bridge-wide gauge in ``keys.GAUGES``."""

    def __init__(self, redis: aioredis.Redis):
        self._redis = redis

    async def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        await self._redis.hset(GAUGES_KEY, series_name(name, labels), str(value))  # type: ignore[misc]
