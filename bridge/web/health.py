"""Probes: ``/healthz`` (the process lives) and ``/readyz`` (the bridge can do its work).

``/readyz`` runs every check and names each failing one in ``reasons`` (503), in this order:

    redis    Redis answers PING (within two seconds).
    worker   a worker's heartbeat is fresh: every worker rewrites arq's heartbeat (``keys.WORKER_HEARTBEAT``)
             each ``health_check_interval`` (5 s) with a TTL one second longer, so the key is gone
             about 6 s after the last worker stopped. Skipped with ``MAGBRIDGE_READY_REQUIRES_WORKER=false``.
    magnify  when polling is on: the poller's last token request succeeded (``keys.MAGNIFY_AUTH``,
             JSON ``{"ok": bool, "error": str, "at": epoch_ms}``, written by the worker).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from bridge.store import keys
from bridge.store.records import text
from bridge.web.state import REDIS, SETTINGS
from config.settings import Settings

__all__ = ["MAGNIFY_AUTH_KEY", "WORKER_HEARTBEAT_KEY", "check_readiness", "healthz", "readyz"]

WORKER_HEARTBEAT_KEY = keys.WORKER_HEARTBEAT
MAGNIFY_AUTH_KEY = keys.MAGNIFY_AUTH
_TIMEOUT_SECONDS = 2.0


def _magnify_check(raw: bytes | str | None) -> dict[str, Any]:
    if raw is None:
        return {"ok": False, "reason": "magnify: credentials not checked yet (no poll has run; is a worker running?)"}
    try:
        auth = json.loads(text(raw))
        ok, error, at = bool(auth["ok"]), str(auth.get("error") or ""), auth.get("at")
    except (ValueError, KeyError, TypeError):
        return {"ok": False, "reason": f"magnify: unreadable credential status in {MAGNIFY_AUTH_KEY}"}
    if ok:
        return {"ok": True, "checked_at_ms": at}
    return {"ok": False, "reason": f"magnify: credentials rejected: {error or 'no detail'}", "checked_at_ms": at}


async def check_readiness(redis: aioredis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    """Each check's result: ``{"ok": bool, "reason": str, ...}``; one Redis round trip."""
    try:
        async with asyncio.timeout(_TIMEOUT_SECONDS):
            async with redis.pipeline(transaction=False) as pipe:
                pipe.ping()
                pipe.get(WORKER_HEARTBEAT_KEY)
                pipe.get(MAGNIFY_AUTH_KEY)
                _, heartbeat, magnify_auth = await pipe.execute()
    except (RedisError, OSError, TimeoutError) as exc:
        return {"redis": {"ok": False, "reason": f"redis: not answering: {exc or type(exc).__name__}"}}
    checks: dict[str, dict[str, Any]] = {"redis": {"ok": True}}
    if settings.ready_requires_worker:
        if heartbeat is None:
            reason = f"worker: no heartbeat in the last 6 s ({WORKER_HEARTBEAT_KEY} is missing): is a worker running?"
            checks["worker"] = {"ok": False, "reason": reason}
        else:
            checks["worker"] = {"ok": True, "heartbeat": text(heartbeat)}
    if settings.magnify_enabled:
        checks["magnify"] = _magnify_check(magnify_auth)
    return checks


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await check_readiness(request.app[REDIS], request.app[SETTINGS])
    reasons = [check["reason"] for check in checks.values() if not check["ok"]]
    body = {"status": "unavailable" if reasons else "ready", "reasons": reasons, "checks": checks}
    return web.json_response(body, status=503 if reasons else 200)
