"""``magbridge check`` against the simulators and a real Redis: passes, and fails naming each cause."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.cli.check import run_check
from bridge.simulators import Simulators
from bridge.simulators.magnews_oauth import MAGNEWS_OAUTH, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN
from config.settings import Settings
from tests.support.commands import magnews_webhook
from tests.support.processes import settings_env
from tests.support.redis_server import RedisServer
from tests.support.service import Service, SettingsFactory

# A webhook secret and an admin token, so that only the warnings a test is about remain.
SECURED = {"webhook_secret": "hook-secret-for-tests", "admin_token": "admin-token-for-tests"}


@pytest.fixture
def secured(make_settings: SettingsFactory, redis: aioredis.Redis) -> Settings:
    return make_settings(**SECURED)


async def check(settings: Settings, *, strict: bool = False) -> tuple[int, dict[str, str], str]:
    """Exit status, ``{check name: its line}``, and the whole output."""
    out = io.StringIO()
    status = await run_check(settings, out=out, strict=strict)
    text = out.getvalue()
    lines = {line.split()[1]: line for line in text.splitlines()[:-1]}
    return status, lines, text


async def check_process(env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "check",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stdout.decode()


async def test_passes_against_the_simulators(secured: Settings) -> None:
    settings = secured
    status, lines, text = await check(settings)
    assert status == 0, text
    for name in ("settings", "receiver", "admin", "rules", "magicbell", "magnews", "magnify"):
        assert lines[name].startswith("ok "), text
    assert "static token (MAGBRIDGE_MAGNEWS_TOKEN): accepted by" in lines["magnews"]
    assert "Magnews topics: communications/msg/bounce" in lines["rules"]
    # The test Redis runs without AOF: a warning, not a failure (unless --strict).
    assert lines["redis"].startswith("WARN") and "aof off" in lines["redis"] and "appendonly yes" in lines["redis"]
    assert lines["webhook"].startswith("skip")
    assert text.endswith("all checks passed, 1 warning(s)\n")
    assert (await check(settings, strict=True))[0] == 1
    assert "sim-magnews-token" not in text and "sim-magicbell-token" not in text
    assert SECURED["webhook_secret"] not in text and SECURED["admin_token"] not in text


async def test_durable_redis_passes_and_eviction_is_warned(secured: Settings, redis: aioredis.Redis) -> None:
    settings = secured
    await redis.config_set("appendonly", "yes")
    try:
        status, lines, text = await check(settings, strict=True)
        assert status == 0, text
        assert "aof on (appendfsync everysec), maxmemory-policy noeviction" in lines["redis"]
        await redis.config_set("maxmemory-policy", "allkeys-lru")
        status, lines, _ = await check(settings, strict=True)
        assert status == 1
        assert "eviction policy allkeys-lru can drop queued events" in lines["redis"]
    finally:
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("appendonly", "no")


async def test_wrong_magnews_token_fails_naming_it(make_settings: SettingsFactory, redis: aioredis.Redis) -> None:
    status, lines, text = await check(make_settings(magnews_token="not-the-token", **SECURED))
    assert status == 1
    assert lines["magnews"].startswith("FAIL") and "HTTP 401" in lines["magnews"]
    assert "invalid bearer token" in lines["magnews"]
    assert lines["magicbell"].startswith("ok")
    assert "not-the-token" not in text
    assert text.endswith("1 check(s) failed, 1 warning(s)\n")


async def test_stopped_redis_fails_naming_it(settings: Settings, redis_server: RedisServer) -> None:
    redis_server.stop()
    try:
        status, lines, text = await check(settings)
    finally:
        redis_server.start()
    assert status == 1
    assert lines["redis"].startswith("FAIL  redis      redis at 127.0.0.1:"), text
    assert "does not answer: Error 111 connecting" in lines["redis"]
    assert lines["magicbell"].startswith("ok"), "the other checks still run"


async def test_invalid_rules_file_fails_naming_file_rule_and_field(
    make_settings: SettingsFactory, redis: aioredis.Redis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "welcome"\nsource = "magnews"\ntypes = ["contacts/create"]\n'
        '[[rules.actions]]\nkind = "magicbell.broadcast"\nrecipients = ["x@example.com"]\ntitle = ""\n'
    )
    status, lines, _ = await check(make_settings(rules_file=rules))
    assert status == 1
    assert lines["rules"].startswith("FAIL")
    assert f"rules file {rules}: rule 'welcome' (#1): actions.0.title" in lines["rules"]


async def test_magnify_credentials_are_checked_when_polling_is_on(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    good = make_settings(magnify_client_id="sim-client", magnify_client_secret="sim-secret")
    status, lines, _ = await check(good)
    assert status == 0 and lines["magnify"].startswith("ok") and "client credentials accepted" in lines["magnify"]
    status, lines, text = await check(make_settings(magnify_client_id="sim-client", magnify_client_secret="wrong"))
    assert status == 1 and lines["magnify"].startswith("FAIL") and "refused the client credentials" in text
    assert "wrong" not in lines["magnify"].split("FAIL", 1)[1].replace("refused", "")


async def test_webhook_subscription_is_looked_up_with_a_public_url(
    start_service: Callable[[Settings], Any], make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service: Service = await start_service(make_settings(webhook_secret="s3cret"))
    settings = make_settings(webhook_secret="s3cret", public_url=service.url)
    status, lines, _ = await check(settings)
    assert status == 0 and lines["webhook"].startswith("WARN") and "magnews-webhook register" in lines["webhook"]

    assert (await magnews_webhook(settings, "register"))[0] == 0
    status, lines, text = await check(settings, strict=False)
    assert lines["webhook"].startswith("ok") and "subscription #1 active" in lines["webhook"], text
    assert "s3cret" not in text

    rotated = make_settings(webhook_secret="n3w-secret", public_url=service.url)  # not registered yet
    _, lines, text = await check(rotated)
    assert lines["webhook"].startswith("WARN") and "token differs from MAGBRIDGE_WEBHOOK_SECRET" in text
    assert "n3w-secret" not in text


@pytest.mark.slow
async def test_invalid_settings_fail_as_a_process(settings: Settings) -> None:
    status, output = await check_process(settings_env(settings, MAGBRIDGE_PORT="eighty"))
    assert status == 2
    assert output.startswith("FAIL  settings   invalid settings: MAGBRIDGE_PORT:"), output
    assert output.endswith("1 check(s) failed\n")


@pytest.mark.slow
async def test_refresh_flow_check_runs_twice_as_processes_on_the_stored_refresh_token(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = make_settings(
        magnews_token=None,
        magnews_client_id=SIM_CLIENT_ID,
        magnews_client_secret=SIM_CLIENT_SECRET,
        magnews_refresh_token=SIM_REFRESH_TOKEN,
        magnews_token_url=simulators.endpoints.magnews_token_url,
    )
    oauth = simulators.magnews_app[MAGNEWS_OAUTH]
    for run in (1, 2):
        status, output = await check_process(settings_env(settings))
        assert status == 0, output
        assert "refresh-token flow at" in output
        assert oauth.grants == run and oauth.refusals == 0
        # The next process starts with nothing but the settings (whose refresh token is spent) and Redis.
        oauth.expire_access_tokens()
        await redis.delete("mb:magnews:access_token")
    assert SIM_CLIENT_SECRET not in output and "sim-magnews-refresh" not in output


async def test_a_missing_webhook_secret_or_admin_token_is_warned(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    status, lines, text = await check(make_settings(allow_unauthenticated_webhooks=False), strict=True)
    assert status == 1, "warnings fail --strict"
    assert lines["receiver"].startswith("WARN") and "`magbridge web` and `run` refuse to start" in lines["receiver"]
    assert lines["admin"].startswith("WARN") and "MAGBRIDGE_ADMIN_TOKEN unset: the admin API answers 503" in text
    _, lines, _ = await check(make_settings(allow_unauthenticated_webhooks=True))
    assert lines["receiver"].startswith("WARN") and "anyone who reaches the receiver can post" in lines["receiver"]
    _, lines, text = await check(make_settings(webhook_secret="new-hook-secret", webhook_secret_previous="old-one1"))
    assert (
        lines["receiver"].startswith("ok ") and "MAGBRIDGE_WEBHOOK_SECRET or MAGBRIDGE_WEBHOOK_SECRET_PREVIOUS" in text
    )
    _, lines, text = await check(make_settings(admin_token="an-admin-token-0123"))
    assert lines["admin"].startswith("ok ") and "an-admin-token-0123" not in text
