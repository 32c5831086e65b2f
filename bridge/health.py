"""Probes: ``/healthz`` (the process lives) and ``/readyz`` (it can do its work)."""

from __future__ import annotations

from aiohttp import web
from redis.exceptions import RedisError

from bridge.state import REDIS

__all__ = ["healthz", "readyz"]


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    reasons: list[str] = []
    try:
        await request.app[REDIS].ping()
    except RedisError as exc:
        reasons.append(f"redis: {exc}")
    if reasons:
        return web.json_response({"status": "unavailable", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready", "reasons": []})
