"""Fixtures: a private Redis, the simulators on real sockets, the web app on a real port, logging put back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog
from aiohttp import web

from bridge.simulators import Simulators, run_simulators
from bridge.store.connections import open_redis
from bridge.web.app import create_app
from config.settings import Settings
from tests.support.redis_server import RedisServer
from tests.support.service import Service, SettingsFactory


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    if redis_server.process is None:  # a test stopped it and failed before restarting
        redis_server.start()
    client = open_redis(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def simulators() -> AsyncIterator[Simulators]:
    async with run_simulators() as sims:
        yield sims


@pytest.fixture
def make_settings(redis_server: RedisServer, simulators: Simulators) -> SettingsFactory:
    """Settings wired to the private Redis and the simulators; keyword arguments override."""

    def factory(**overrides: Any) -> Settings:
        endpoints = simulators.endpoints
        values: dict[str, Any] = {
            "redis_url": redis_server.url,
            "magicbell_base_url": endpoints.magicbell_base_url,
            "magicbell_token": "sim-magicbell-token",
            "magicbell_recipients": ["ops@example.com", "oncall@example.com"],
            "magnews_base_url": endpoints.magnews_base_url,
            "magnews_token": "sim-magnews-token",
            "magnews_database_id": 7,
            "magnify_base_url": endpoints.magnify_base_url,
            "magnify_token_url": endpoints.magnify_token_url,
            "magicbell_max_rps": 0,
            "magnews_max_rps": 0,
            "retry_base_seconds": 0.01,
            "retry_cap_seconds": 0.05,
            "log_level": "warning",
            # Most tests post webhooks without a token; the tests of the secret set one.
            "allow_unauthenticated_webhooks": True,
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def settings(make_settings: SettingsFactory, redis: aioredis.Redis) -> Settings:
    return make_settings()


@pytest.fixture
async def start_service() -> AsyncIterator[Callable[[Settings], Any]]:
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(settings: Settings) -> Service:
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Service(f"http://127.0.0.1:{port}", session)

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def service(start_service: Callable[[Settings], Any], settings: Settings) -> Service:
    result: Service = await start_service(settings)
    return result


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the other tests."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access_level = logging.getLogger("aiohttp.access").level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access_level)
