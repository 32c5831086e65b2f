"""``magbridge worker`` through a Redis outage: the process stays up, says so once per restart, keeps
its probes answering (alive, not ready), and delivers again by itself once Redis is back."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.simulators import Simulators
from bridge.store.connections import open_redis
from tests.support.events import magnews_event
from tests.support.processes import settings_env, stop_process
from tests.support.redis_server import RedisServer, free_port
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import sim_requests
from tests.support.waiting import wait_delivered, wait_until

pytestmark = pytest.mark.slow


async def _probe(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as response:
            return response.status, await response.json()
    except aiohttp.ClientError:
        return 0, None


async def test_worker_rides_out_a_redis_outage_with_its_probes_answering(
    make_settings: SettingsFactory, simulators: Simulators, start_service: Any, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    probe_port = free_port()
    settings = make_settings(redis_url=server.url, worker_probes=True, host="127.0.0.1", port=probe_port)
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", "worker",
            env=settings_env(settings, MAGBRIDGE_LOG_LEVEL="info"), stdout=sink, stderr=sink,
        )  # fmt: skip
    probes = f"http://127.0.0.1:{probe_port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                return (await _probe(session, f"{probes}/readyz"))[0] == 200

            await wait_until(ready, timeout=20)
            server.stop()

            async def waiting() -> bool:
                return b"redis unavailable, worker waiting" in log.read_bytes()

            await wait_until(waiting, timeout=20)
            assert (await _probe(session, f"{probes}/healthz"))[0] == 200, "alive through the outage"
            status, body = await _probe(session, f"{probes}/readyz")
            assert status == 503 and body["reasons"][0].startswith("redis: "), body
            await asyncio.sleep(2.5)  # a few restarts fail while Redis is gone; the process stays
            assert worker.returncode is None

            server.start()
            await wait_until(ready, timeout=20)
            service: Service = await start_service(settings)
            async with service.post_webhook(magnews_event("after-outage", "contacts/delete")) as response:
                assert response.status == 200
            client = open_redis(server.url)
            try:
                await wait_delivered(client, ["after-outage"], timeout=20)
            finally:
                await client.aclose()
        [broadcast] = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
        assert broadcast["body"]["custom_attributes"]["magbridge_event_id"] == "after-outage"
        assert await stop_process(worker, signal.SIGTERM, timeout=30) == 0
    finally:
        await stop_process(worker, signal.SIGKILL)
        server.stop()
