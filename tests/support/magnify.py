"""Helpers for the Magnify ingestion tests: settings for a chosen simulator, pollers, what was ingested."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bridge.events import magnify_envelope
from bridge.simulators import SIM_CORE, RecordedRequest, Simulators
from bridge.simulators.magnify import MAGNIFY_BACKEND, MagnifyBackend
from bridge.store.stats import STATS_KEY
from config.settings import Settings
from workers.magnify.client import MagnifyLimits
from workers.magnify.poller import POLLED_STATES, MagnifyPoller

CREDENTIALS: dict[str, Any] = {"magnify_client_id": "sim-client", "magnify_client_secret": "sim-secret"}


def magnify_settings(make_settings: Callable[..., Settings], sims: Simulators, **overrides: Any) -> Settings:
    """Settings pointed at ``sims`` (Magnify and the delivery simulators) with polling enabled."""
    values: dict[str, Any] = {
        "magnify_base_url": sims.endpoints.magnify_base_url,
        "magnify_token_url": sims.endpoints.magnify_token_url,
        "magicbell_base_url": sims.endpoints.magicbell_base_url,
        "magnews_base_url": sims.endpoints.magnews_base_url,
        "magnify_retry_base_seconds": 0.01,
        "magnify_retry_cap_seconds": 0.5,
        "magnify_start": "everything",  # the simulator's history is old: read it all unless a test says
        **CREDENTIALS,
        **overrides,
    }
    return make_settings(**values)


def backend(sims: Simulators) -> MagnifyBackend:
    return sims.magnify_app[MAGNIFY_BACKEND]


def expected_ids(sims: Simulators, *, window: int | None = None) -> set[str]:
    """Event ids of every metric of a polled motion in the simulator (within ``window`` if given)."""
    data = backend(sims).data
    ids: set[str] = set()
    newest_first = backend(sims).order == "newest_first"
    for motion in data.motions:
        if motion.state not in POLLED_STATES:
            continue
        metrics = motion.metrics
        if window is not None:
            metrics = metrics[-window:] if newest_first else metrics[:window]
        ids.update(magnify_envelope(metric).id for metric in metrics)
    return ids


def polled_motions(sims: Simulators) -> int:
    return sum(1 for motion in backend(sims).data.motions if motion.state in POLLED_STATES)


async def ingested_ids(redis: aioredis.Redis) -> set[str]:
    return {member.decode() for member in await redis.zrange("mb:events", 0, -1)}


async def stat(redis: aioredis.Redis, series: str) -> int:
    """A tally the store keeps in ``keys.STATS`` (``received|source=magnify``, ...)."""
    value = await redis.hget(STATS_KEY, series)  # type: ignore[misc]
    return int(value or 0)


def counted(poller: MagnifyPoller, name: str, **labels: str) -> float:
    """``magbridge_<name>_total`` in the poller's process series (``bridge.process_metrics``)."""
    return poller.metrics.value(f"magbridge_{name}_total", **labels)


def api_requests(sims: Simulators, path_part: str = "") -> list[RecordedRequest]:
    """What the Magnify simulator received (control routes excluded), in order."""
    return [record for record in sims.magnify_app[SIM_CORE].records if path_part in record.path]


def metrics_requests(sims: Simulators) -> list[RecordedRequest]:
    return api_requests(sims, "/email-metrics")


def clear_requests(sims: Simulators) -> None:
    sims.magnify_app[SIM_CORE].records.clear()


def append(sims: Simulators, per_motion: dict[int, int]) -> int:
    """Append metrics to the EXECUTING motions by position (``{0: 250, 3: 1}``); how many in all."""
    data = backend(sims).data
    executing = data.executing()
    for position, count in per_motion.items():
        data.append(executing[position], count, int(time.time() * 1000))
    return sum(per_motion.values())


@asynccontextmanager
async def open_poller(
    settings: Settings, redis: aioredis.Redis, *, limits: MagnifyLimits | None = None, **kwargs: Any
) -> AsyncIterator[MagnifyPoller]:
    """A poller on its own client session, closed on exit."""
    async with aiohttp.ClientSession() as session:
        yield MagnifyPoller.from_settings(redis, session, settings, limits=limits, **kwargs)
