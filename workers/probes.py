"""A worker's own endpoints, for containers and Prometheus: ``/healthz``, ``/readyz`` and ``/metrics``
on ``HOST:PORT``.

Served by ``magbridge worker`` when ``MAGBRIDGE_WORKER_PROBES`` is true (the container image sets
it), so one image's ``HEALTHCHECK``, a Kubernetes worker Deployment's probes and a Prometheus
scrape work as they do for ``magbridge web``. Off by default, so a worker beside ``magbridge web``
on one host takes no port.

    /healthz   200 while the process lives (it runs on the worker's event loop, so a blocked loop fails it)
    /readyz    this worker's own health: 200 when Redis answers PING within two seconds and this
               process's arq worker is running (not between restarts after a Redis error), else 503
               with the reasons; a destination paused for refused credentials is named in
               ``reasons`` and ``checks`` without failing it (the worker still delivers to the other
               one; restarting it would not help)
    /metrics   this process's series (``bridge.process_metrics``): its deliveries, retries, dead
               letters, finished events, sweeps and Magnify polls; the queue-wide series are the web
               service's (``bridge.web.metrics``)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from bridge.process_metrics import ProcessMetrics
from bridge.web.health import healthz, read_pauses, readiness_body
from config.settings import Settings

__all__ = ["start_probes"]

_REDIS = web.AppKey("worker_redis", aioredis.Redis)
_METRICS = web.AppKey("worker_metrics", ProcessMetrics)
_RUNNING: web.AppKey[Callable[[], bool]] = web.AppKey("worker_running")
_TIMEOUT_SECONDS = 2.0


async def _readyz(request: web.Request) -> web.Response:
    redis = request.app[_REDIS]
    pauses: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(_TIMEOUT_SECONDS):
            await redis.ping()
            pauses = await read_pauses(redis)
    except (RedisError, OSError, TimeoutError) as exc:
        checks: dict[str, dict[str, Any]] = {
            "redis": {"ok": False, "reason": f"redis: not answering: {exc or type(exc).__name__}"}
        }
    else:
        checks = {"redis": {"ok": True}}
    if request.app[_RUNNING]():
        checks["worker"] = {"ok": True}
    else:
        checks["worker"] = {"ok": False, "reason": "worker: not running (starting, or restarting after a Redis error)"}
    checks.update(pauses)
    body, status = readiness_body(checks)
    return web.json_response(body, status=status)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_probes(
    settings: Settings, redis: aioredis.Redis, metrics: ProcessMetrics, running: Callable[[], bool]
) -> web.AppRunner:
    """Serve the probes and the metrics until the returned runner is cleaned up; ``running`` says
    whether this process's arq worker runs now."""
    app = web.Application()
    app[_REDIS] = redis
    app[_METRICS] = metrics
    app[_RUNNING] = running
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    return runner
