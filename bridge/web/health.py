"""Probes: ``/healthz`` (the process lives) and ``/readyz`` (the bridge can do its work).

``/readyz`` runs every check and names each failing one in ``reasons`` (503), in this order:

    redis    Redis answers PING (within two seconds).
    worker   only with ``MAGBRIDGE_READY_REQUIRES_WORKER=true``: a worker's heartbeat is fresh. Every
             worker rewrites arq's heartbeat (``keys.WORKER_HEARTBEAT``) each ``health_check_interval``
             (5 s) with a TTL one second longer, so the key is gone about 6 s after the last worker
             stopped. Off by default: Redis holds the queue, so the receiver keeps storing events
             while no worker runs; a worker's health is its own probe (``workers.probes``) and the
             ``magbridge_worker_up`` alert.
    magnify  when polling is on: the poller's last token request succeeded (``keys.MAGNIFY_AUTH``,
             JSON ``{"ok": bool, "error": str, "at": epoch_ms}``, written by the worker).
    magicbell, magnews
             only while that destination is paused because it refused our credentials
             (``keys.gate_paused``): ``ok`` false, ``blocking`` false. Named in ``reasons``, but it
             does not make ``/readyz`` answer 503: the receiver still stores events (they wait), and
             taking it out of service would stop the other destination's deliveries too.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from bridge.events import format_time
from bridge.store import keys
from bridge.store.records import text
from bridge.web.state import REDIS, SETTINGS
from config.settings import Settings

__all__ = [
    "MAGNIFY_AUTH_KEY",
    "WORKER_HEARTBEAT_KEY",
    "check_readiness",
    "healthz",
    "pause_check",
    "read_pauses",
    "readiness_body",
    "readyz",
]

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


def _when(ms: object) -> str:
    try:
        return format_time(datetime.fromtimestamp(int(str(ms)) / 1000, UTC))
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"


def pause_check(destination: str, raw: dict[Any, Any]) -> dict[str, Any] | None:
    """The check of a destination paused for refused credentials (its ``keys.gate_paused`` hash), or
    ``None`` when it is not paused. Never shows the credential's fingerprint."""
    fields = {text(key): text(value) for key, value in raw.items()}
    if not fields:
        return None
    status = fields.get("status") or "?"
    since, last = _when(fields.get("since")), _when(fields.get("at"))
    reason = (
        f"{destination}: paused, credentials refused (HTTP {status}) at {since}; its events wait and one "
        f"probe request retries after each cooldown (last refusal {last})"
    )
    check: dict[str, Any] = {"ok": False, "blocking": False, "paused": True, "reason": reason, "since": since}
    for name in ("since", "at", "retry_at"):
        if (fields.get(name) or "").isdigit():
            check[f"{name}_ms"] = int(fields[name])
    if status.isdigit():
        check["status"] = int(status)
    return check


async def read_pauses(redis: aioredis.Redis) -> dict[str, dict[str, Any]]:
    """The check of each paused destination (none when every destination delivers)."""
    async with redis.pipeline(transaction=False) as pipe:
        for destination in keys.DESTINATIONS:
            pipe.hgetall(keys.gate_paused(destination))
        replies = await pipe.execute()
    checks = {
        destination: pause_check(destination, raw) for destination, raw in zip(keys.DESTINATIONS, replies, strict=True)
    }
    return {destination: check for destination, check in checks.items() if check is not None}


async def check_readiness(redis: aioredis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    """Each check's result: ``{"ok": bool, "reason": str, ...}``; one Redis round trip."""
    try:
        async with asyncio.timeout(_TIMEOUT_SECONDS):
            async with redis.pipeline(transaction=False) as pipe:
                pipe.ping()
                pipe.get(WORKER_HEARTBEAT_KEY)
                pipe.get(MAGNIFY_AUTH_KEY)
                for destination in keys.DESTINATIONS:
                    pipe.hgetall(keys.gate_paused(destination))
                _, heartbeat, magnify_auth, *pauses = await pipe.execute()
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
    for destination, raw in zip(keys.DESTINATIONS, pauses, strict=True):
        paused = pause_check(destination, raw)
        if paused is not None:
            checks[destination] = paused
    return checks


def readiness_body(checks: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """The ``/readyz`` answer: every failing check in ``reasons``; 503 only for a blocking one."""
    reasons = [check["reason"] for check in checks.values() if not check["ok"]]
    unready = any(not check["ok"] and check.get("blocking", True) for check in checks.values())
    body = {"status": "unavailable" if unready else "ready", "reasons": reasons, "checks": checks}
    return body, 503 if unready else 200


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await check_readiness(request.app[REDIS], request.app[SETTINGS])
    body, status = readiness_body(checks)
    return web.json_response(body, status=status)
