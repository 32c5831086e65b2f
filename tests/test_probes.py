"""``/healthz`` and ``/readyz`` on a real socket: Redis outages, the worker heartbeat, Magnify credentials."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from bridge.web.health import MAGNIFY_AUTH_KEY, WORKER_HEARTBEAT_KEY
from config.settings import Settings
from tests.support.redis_server import RedisServer
from tests.support.service import Service, SettingsFactory
from tests.support.workers import running_worker


async def ready(service: Service) -> tuple[int, dict[str, Any]]:
    async with service.session.get(f"{service.url}/readyz") as response:
        return response.status, await response.json()


async def test_healthz_answers_while_the_process_lives(service: Service, redis_server: RedisServer) -> None:
    redis_server.stop()
    try:
        async with service.session.get(f"{service.url}/healthz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
    finally:
        redis_server.start()


async def test_readiness_follows_redis_down_and_back(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    service = await start_service(make_settings(ready_requires_worker=False))
    assert await ready(service) == (200, {"status": "ready", "reasons": [], "checks": {"redis": {"ok": True}}})
    redis_server.stop()
    try:
        status, body = await ready(service)
        assert status == 503 and body["status"] == "unavailable"
        [reason] = body["reasons"]
        assert reason.startswith("redis: not answering: ") and "onnect" in reason
        assert body["checks"]["redis"]["ok"] is False
    finally:
        redis_server.start()
    assert (await ready(service))[0] == 200


async def test_readiness_does_not_depend_on_a_worker_by_default(service: Service, settings: Settings) -> None:
    """Redis holds the queue: with no worker at all, the receiver stays in its Service and stores."""
    assert not settings.ready_requires_worker
    assert await ready(service) == (200, {"status": "ready", "reasons": [], "checks": {"redis": {"ok": True}}})
    async with service.post_webhook({"id": "no-worker", "topic": "contacts/delete"}) as response:
        assert response.status == 200


async def test_readiness_needs_a_fresh_worker_heartbeat_when_asked_to(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    settings = make_settings(ready_requires_worker=True)
    service = await start_service(settings)
    status, body = await ready(service)
    assert status == 503
    assert body["reasons"] == [
        "worker: no heartbeat in the last 6 s (mb:worker:heartbeat is missing): is a worker running?"
    ]
    assert body["checks"]["redis"] == {"ok": True}
    async with running_worker(settings, redis):
        status, body = await ready(service)
        assert status == 200 and body["reasons"] == []
        assert "j_complete=" in body["checks"]["worker"]["heartbeat"]
        assert 0 < await redis.pttl(WORKER_HEARTBEAT_KEY) <= 6000, "the key lapses 6 s after the last beat"
    status, body = await ready(service)  # a worker that stops removes its heartbeat
    assert status == 503 and body["reasons"][0].startswith("worker: ")


async def test_readiness_checks_magnify_credentials_when_polling(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    settings = make_settings(ready_requires_worker=False, magnify_client_id="c", magnify_client_secret="s")
    service = await start_service(settings)
    status, body = await ready(service)
    assert status == 503 and body["reasons"] == [
        "magnify: credentials not checked yet (no poll has run; is a worker running?)"
    ]
    error = "magnify token endpoint refused the client credentials or scope (HTTP 401: invalid_client)"
    await redis.set(MAGNIFY_AUTH_KEY, json.dumps({"ok": False, "error": error, "at": 1700000000000}))
    status, body = await ready(service)
    assert status == 503 and body["reasons"] == [f"magnify: credentials rejected: {error}"]
    assert "s" not in body["checks"]["magnify"].get("secret", ""), "nothing of the secret is shown"
    await redis.set(MAGNIFY_AUTH_KEY, json.dumps({"ok": True, "error": "", "at": 1700000060000}))
    status, body = await ready(service)
    assert status == 200 and body["checks"]["magnify"] == {"ok": True, "checked_at_ms": 1700000060000}


async def test_every_failing_check_is_named(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    settings = make_settings(ready_requires_worker=True, magnify_client_id="c", magnify_client_secret="s")
    service = await start_service(settings)
    status, body = await ready(service)
    assert status == 503
    assert [reason.split(":")[0] for reason in body["reasons"]] == ["worker", "magnify"]
