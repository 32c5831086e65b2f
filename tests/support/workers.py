"""Real arq workers in the test's own event loop: a burst until the queue is empty, or one running in
the background for the length of a ``with`` block."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from arq import Worker

from bridge.store import keys
from config.settings import Settings
from workers.supervisor import stop_running
from workers.worker import create_worker

__all__ = ["run_worker_burst", "running_worker"]


async def run_worker_burst(settings: Settings, **overrides: Any) -> Any:
    """Run a real arq worker until the queue is empty, as arq's own tests do."""
    worker = create_worker(settings, burst=True, poll_delay=0, handle_signals=False, **overrides)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, redis: aioredis.Redis | None = None) -> AsyncIterator[Worker]:
    """A real worker in the background; given ``redis``, yielded only once its first heartbeat is there."""
    worker = create_worker(settings, handle_signals=False, poll_delay=0.01)
    task = asyncio.create_task(worker.async_run())
    try:
        if redis is not None:
            deadline = time.monotonic() + 5
            while not await redis.exists(keys.WORKER_HEARTBEAT):
                assert time.monotonic() < deadline, "no worker heartbeat"
                await asyncio.sleep(0.01)
        yield worker
    finally:
        await stop_running(worker, task)
        await worker.close()
