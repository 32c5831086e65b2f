"""``magbridge check``: settings, rules, Redis and each API's authentication, each named on failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TextIO

import aiohttp
from redis.exceptions import RedisError

from bridge.connections import open_redis
from config.errors import ConfigError, DeliveryError
from config.rules import load_rules
from config.settings import Settings
from workers.magicbell import MagicBellClient
from workers.magnews import MagnewsClient

__all__ = ["run_check"]

Check = Callable[[], Awaitable[str]]


async def _redis(settings: Settings) -> str:
    redis = open_redis(settings.redis_url)
    try:
        await redis.ping()
        info = await redis.info()
    finally:
        await redis.aclose()
    policy = info.get("maxmemory_policy", "?")
    aof = "on" if info.get("aof_enabled") else "off"
    note = "" if policy == "noeviction" else f" (WARNING: eviction policy {policy} can drop queued events)"
    return f"redis {info.get('redis_version', '?')}, aof {aof}, maxmemory-policy {policy}{note}"


async def run_check(settings: Settings, *, out: TextIO) -> int:
    """Run every check, print one line each, and return the exit status (0 when all pass)."""
    failures = 0
    async with aiohttp.ClientSession() as session:
        magicbell = MagicBellClient.from_settings(session, settings)
        magnews = MagnewsClient.from_settings(session, settings)

        async def rules() -> str:
            return f"{len(load_rules(settings.rules_file).rules)} rules in {settings.rules_file}"

        async def magicbell_auth() -> str:
            await magicbell.ping()
            return f"token accepted by {settings.magicbell_base_url}"

        async def magnews_auth() -> str:
            await magnews.ping()
            return f"token accepted by {settings.magnews_base_url}"

        async def redis_check() -> str:
            return await _redis(settings)

        checks: list[tuple[str, Check]] = [
            ("settings", _ok("valid")),
            ("rules", rules),
            ("redis", redis_check),
            ("magicbell", magicbell_auth),
            ("magnews", magnews_auth),
        ]
        for name, check in checks:
            try:
                detail = await check()
            except (ConfigError, DeliveryError, RedisError, OSError) as exc:
                failures += 1
                out.write(f"FAIL  {name:<10} {exc}\n")
            else:
                out.write(f"ok    {name:<10} {detail}\n")
    out.write("all checks passed\n" if not failures else f"{failures} check(s) failed\n")
    return 0 if not failures else 1


def _ok(detail: str) -> Check:
    async def check() -> str:
        return detail

    return check
