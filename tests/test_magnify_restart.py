"""A real worker process killed (SIGKILL) in the middle of a poll cycle, then restarted: every metric
that the simulator holds, including those appended meanwhile, ends up ingested exactly once. The
second worker's own ``/metrics`` (on its probe port) counts exactly what it stored."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.simulators import SIM_CORE, Simulators, run_simulators
from tests.support.magnify import append, expected_ids, ingested_ids, stat
from tests.support.redis_server import RedisServer, free_port
from tests.support.scrape import scrape, value

pytestmark = pytest.mark.slow  # real worker processes, killed and restarted

REPO = Path(__file__).resolve().parent.parent
# Rules that match no Magnify event: every delivery job is a quick "ignored", so the worker's time
# goes to polling (deliveries of polled metrics are tested in test_magnify_delivery.py).
QUIET_RULES = """
[[rules]]
name = "never"
source = "magnews"
types = ["never/happens"]

[[rules.actions]]
kind = "magicbell.broadcast"
recipients = ["ops@example.com"]
title = "never"
content = "never"
"""


def worker_env(sims: Simulators, redis_url: str, rules: Path, probe_port: int) -> dict[str, str]:
    endpoints = sims.endpoints
    settings = {
        "REDIS_URL": redis_url,
        "WORKER_PROBES": "true",  # its /metrics, on the probe port
        "HOST": "127.0.0.1",
        "PORT": str(probe_port),
        "RULES_FILE": str(rules),
        "MAGNIFY_BASE_URL": endpoints.magnify_base_url,
        "MAGNIFY_TOKEN_URL": endpoints.magnify_token_url,
        "MAGNIFY_CLIENT_ID": "sim-client",
        "MAGNIFY_CLIENT_SECRET": "sim-secret",
        "MAGNIFY_POLL_SECONDS": "1",
        "MAGNIFY_START": "everything",
        "MAGNIFY_LOCK_SECONDS": "1",
        "MAGNIFY_CONCURRENCY": "2",
        "MAGICBELL_BASE_URL": endpoints.magicbell_base_url,
        "MAGICBELL_TOKEN": "sim-magicbell-token",
        "MAGICBELL_RECIPIENTS": "ops@example.com",
        "MAGICBELL_MAX_RPS": "0",
        "MAGNEWS_BASE_URL": endpoints.magnews_base_url,
        "MAGNEWS_TOKEN": "sim-magnews-token",
        "MAGNEWS_DATABASE_ID": "7",
        "MAGNEWS_MAX_RPS": "0",
        # A cycle's budget is job timeout - HTTP timeout - 1: six seconds, enough for the whole account.
        "JOB_TIMEOUT_SECONDS": "10",
        "HTTP_TIMEOUT_SECONDS": "3",
        "LOG_LEVEL": "info",
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAGBRIDGE_")}
    env.update({f"MAGBRIDGE_{key}": value for key, value in settings.items()})
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, log: Path, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(f"timed out waiting for {what}; worker log ends with:\n{tail}")


@pytest.mark.parametrize("order", ["oldest_first", "newest_first"])
async def test_worker_killed_mid_cycle_then_restarted_ingests_every_metric_once(
    redis_server: RedisServer, redis: aioredis.Redis, tmp_path: Path, order: str
) -> None:
    account = {"motions": 8, "metrics_per_motion": 200, "size_spread": 0.5, "order": order, "seed": 11}
    log = tmp_path / "worker.log"
    async with run_simulators(magnify=account) as sims:
        sims.magnify_app[SIM_CORE].faults.update({"latency_ms": 60})  # a cycle long enough to die in
        rules = tmp_path / "rules.toml"
        rules.write_text(QUIET_RULES)
        probe_port = free_port()
        env = worker_env(sims, redis_server.url, rules, probe_port)
        metrics_url = f"http://127.0.0.1:{probe_port}/metrics"
        ingested = "received|source=magnify"  # the store's tally, kept in the script that stores
        total = len(expected_ids(sims))

        first = start_worker(env, log)
        try:

            async def partly_ingested() -> bool:
                return await stat(redis, ingested) >= total // 5

            await wait_for(partly_ingested, 30, log, "the first worker to ingest a part")
            append(sims, {0: 30, 1: 3})  # arriving while the cycle pages
            await asyncio.sleep(0.1)
        finally:
            first.kill()  # SIGKILL: no cleanup, the lock is left to lapse
            first.wait(timeout=10)
        before_restart = await stat(redis, ingested)
        assert 0 < before_restart < total
        append(sims, {2: 120, 3: 1})  # arriving while no worker runs

        second = start_worker(env, log)
        try:
            expected = expected_ids(sims)

            async def all_ingested() -> bool:
                return await ingested_ids(redis) == expected

            await wait_for(all_ingested, 40, log, "every metric to be ingested")
            async with aiohttp.ClientSession() as session:
                polls = value(await scrape(session, metrics_url), "magbridge_magnify_polls_total", outcome="ok")

                async def another_poll() -> bool:
                    samples = await scrape(session, metrics_url)
                    return value(samples, "magbridge_magnify_polls_total", outcome="ok") > polls

                await wait_for(another_poll, 10, log, "a steady-state poll")
                samples = await scrape(session, metrics_url)
        finally:
            second.terminate()
            second.wait(timeout=30)

    # The event store counts what it stores in the same script that stores it: each metric once.
    assert await stat(redis, ingested) == len(expected)
    assert await ingested_ids(redis) == expected
    # The second process counts what it stored, and only that: the first one's are not in its series.
    stored = sum(v for (name, labels), v in samples.items() if name == "magbridge_received_total")
    assert stored == value(samples, "magbridge_magnify_metrics_ingested_total") == len(expected) - before_restart
