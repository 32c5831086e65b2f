"""No open door by default: without ``MAGBRIDGE_WEBHOOK_SECRET`` the receiver does not start unless
``MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS`` says so; ``web`` and ``run`` stop with one line."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.web.app import create_app
from bridge.web.webhook_guard import WebhookGuard
from config.errors import ConfigError
from tests.support.events import magnews_event
from tests.support.processes import settings_env, stop_process
from tests.support.redis_server import free_port
from tests.support.service import SettingsFactory


def test_the_guard_refuses_to_be_built_without_a_secret(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigError) as info:
        WebhookGuard.from_settings(make_settings(allow_unauthenticated_webhooks=False))
    assert "MAGBRIDGE_WEBHOOK_SECRET is not set" in str(info.value)
    assert "MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS=true" in str(info.value)
    with pytest.raises(ConfigError):
        create_app(make_settings(allow_unauthenticated_webhooks=False))
    assert WebhookGuard.from_settings(make_settings(allow_unauthenticated_webhooks=True)).secret_digests == ()
    guarded = WebhookGuard.from_settings(make_settings(webhook_secret="s3cret-x", allow_unauthenticated_webhooks=False))
    assert len(guarded.secret_digests) == 1


async def _run(command: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", command,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        await stop_process(process, timeout=10)  # a command that started after all is stopped here
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["web", "run"])
async def test_the_receiver_does_not_start_without_a_secret(
    command: str, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    settings = make_settings(host="127.0.0.1", port=free_port(), allow_unauthenticated_webhooks=False)
    status, stdout, stderr = await _run(command, settings_env(settings))
    assert status == 2
    assert stdout == "", "nothing started, so no start line"
    [line] = stderr.splitlines()
    assert line.startswith("magbridge: MAGBRIDGE_WEBHOOK_SECRET is not set, so anyone who reaches the receiver")
    assert "MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS=true" in line


@pytest.mark.slow
async def test_the_open_receiver_starts_when_asked_and_a_secret_closes_it(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/magnews"
    secret = {"webhook_secret": "the-secret-1", "allow_unauthenticated_webhooks": False}
    for overrides, expected in (({"allow_unauthenticated_webhooks": True}, 200), (secret, 401)):
        settings = make_settings(host="127.0.0.1", port=port, **overrides)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", "web", env=settings_env(settings),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert await _first_answer(url, f"door-{expected}") == expected
        finally:
            assert await stop_process(process, timeout=20) == 0


async def _first_answer(url: str, event_id: str) -> int:
    """The status of the first webhook the starting receiver answers (no token sent)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.post(url, json=magnews_event(event_id, "contacts/update")) as answer:
                    return answer.status
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise AssertionError("the receiver never answered")
