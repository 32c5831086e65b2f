"""arq's own command line runs the bridge's worker: ``arq workers.worker.WorkerSettings``, whose
``WorkerSettings`` the module builds from the ``MAGBRIDGE_*`` environment when arq asks for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge.simulators import Simulators
from config.settings import Settings
from tests.support.events import magnews_event
from tests.support.processes import start_arq, stop_process
from tests.support.service import Service
from tests.support.simulators import sim_requests, sim_state
from tests.support.store import event_record

pytestmark = pytest.mark.slow


async def test_plain_arq_burst_delivers_a_webhook_event_once(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis, tmp_path: Path
) -> None:
    async with service.post_webhook(magnews_event("arq-1", "contacts/delete")) as response:
        assert response.status == 200
    assert (await event_record(redis, "arq-1"))["status"] == "queued"

    output = tmp_path / "arq.log"
    worker = await start_arq(settings, "workers.worker.WorkerSettings", "--burst", cwd=tmp_path, output=output)
    try:
        returncode = await asyncio.wait_for(worker.wait(), 60)
    finally:
        await stop_process(worker)  # signals it only if it still runs
    assert returncode == 0, output.read_text()

    magicbell = simulators.endpoints.magicbell_base_url
    [broadcast] = await sim_requests(magicbell, "/broadcasts")
    assert broadcast["status"] == 201
    assert broadcast["body"]["custom_attributes"] == {
        "magbridge_event_id": "arq-1",
        "magbridge_rule": "magnews-contact-lost",
    }
    assert (await sim_state(magicbell))["side_effects"] == 1
    assert (await event_record(redis, "arq-1"))["status"] == "delivered"
