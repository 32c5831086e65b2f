"""A worker's own probes, for containers: ``/healthz`` and ``/readyz`` on ``HOST:PORT``.

Served by ``magbridge worker`` when ``MAGBRIDGE_WORKER_PROBES`` is true (the container image sets
it), so one image's ``HEALTHCHECK`` and a Kubernetes worker Deployment's probes work as they do for
``magbridge web``. Off by default, so a worker beside ``magbridge web`` on one host takes no port.

    /healthz   200 while the process lives (it runs on the worker's event loop, so a blocked loop fails it)
    /readyz    200 when Redis answers PING within two seconds, else 503 with the reason; a destination
               paused for refused credentials is named in ``reasons`` and ``checks`` without failing it
               (the worker still delivers to the other one; restarting it would not help)
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from bridge.web.health import healthz, read_pauses, readiness_body
from config.settings import Settings

__all__ = ["start_probes"]

_REDIS = web.AppKey("worker_redis", aioredis.Redis)
_TIMEOUT_SECONDS = 2.0


async def _readyz(request: web.Request) -> web.Response:
    redis = request.app[_REDIS]
    try:
        async with asyncio.timeout(_TIMEOUT_SECONDS):
            await redis.ping()
            pauses = await read_pauses(redis)
    except (RedisError, OSError, TimeoutError) as exc:
        reason = f"redis: not answering: {exc or type(exc).__name__}"
        return web.json_response({"status": "unavailable", "reasons": [reason]}, status=503)
    if not pauses:
        return web.json_response({"status": "ready", "reasons": []})
    body, status = readiness_body({"redis": {"ok": True}, **pauses})
    return web.json_response(body, status=status)


async def start_probes(settings: Settings, redis: aioredis.Redis) -> web.AppRunner:
    """Serve the probes until the returned runner is cleaned up."""
    app = web.Application()
    app[_REDIS] = redis
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", _readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    return runner
