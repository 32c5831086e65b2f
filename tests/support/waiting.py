"""Waiting for what a worker does in the background, and the event statuses such waits look at."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from bridge.store import keys

__all__ = ["statuses", "wait_delivered", "wait_until"]


async def statuses(redis: aioredis.Redis, ids: list[str]) -> dict[str, int]:
    """How many of ``ids`` are in each status (``missing`` for those not stored)."""
    counts: dict[str, int] = defaultdict(int)
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in ids:
            pipe.hget(keys.event(event_id), "status")
        for value in await pipe.execute():
            counts[value.decode() if value else "missing"] += 1
    return dict(counts)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.1) -> float:
    """Seconds until ``check()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(step)
    return time.monotonic() - started


async def wait_delivered(client: aioredis.Redis, ids: list[str], timeout: float, step: float = 0.1) -> float:
    """Seconds until every one of ``ids`` is ``delivered``; fails the test after ``timeout``."""

    async def all_delivered() -> bool:
        return (await statuses(client, ids)) == {"delivered": len(ids)}

    return await wait_until(all_delivered, timeout, step)
