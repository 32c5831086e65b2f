"""Metrics per process, with real processes scraped over HTTP: two ``magbridge web`` and one
``magbridge worker`` (its ``/metrics`` on its probe port), then ``magbridge run`` (one registry).

Each process counts only its own work, so a ``sum`` over processes is the bridge's figure; the queue
series (``scope="queue"``) are the same on every web process, and workers do not export them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.simulators import Simulators
from config.settings import Settings
from tests.support.events import magnews_event
from tests.support.processes import start_process, stop_process
from tests.support.redis_server import free_port
from tests.support.scrape import Samples, names, scrape, value
from tests.support.service import SettingsFactory
from tests.support.simulators import sim_requests
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # real processes

HOOK = {"route": "/webhooks/magnews", "method": "POST", "status": "200"}
QUEUE = {"scope": "queue"}
QUEUE_GAUGES = ("magbridge_queue_depth", "magbridge_queue_due", "magbridge_events_indexed", "magbridge_worker_up")


@contextlib.asynccontextmanager
async def running(command: str, settings: Settings, **extra: str) -> AsyncIterator[str]:
    """``magbridge <command>`` listening on a port of its own; yields its base URL once it answers."""
    port = free_port()
    process = await start_process(command, settings, MAGBRIDGE_HOST="127.0.0.1", MAGBRIDGE_PORT=str(port), **extra)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                assert process.returncode is None, f"magbridge {command} exited with {process.returncode}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                assert time.monotonic() < deadline, f"magbridge {command} did not answer"
                await asyncio.sleep(0.05)
        yield url
    finally:
        assert await stop_process(process) == 0


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` that has these labels (and any others)."""
    wanted = set(labels.items())
    return sum(v for (sample, sample_labels), v in samples.items() if sample == name and wanted <= sample_labels)


async def ready(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(f"{url}/readyz") as response:
        return response.status, await response.json()


async def test_two_web_processes_and_a_worker_each_export_their_own_figures(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = make_settings()
    sent = {"a": 7, "b": 5}
    ids = [f"{name}-{number}" for name, count in sent.items() for number in range(count)]
    async with (
        aiohttp.ClientSession() as session,
        running("web", settings) as web_a,
        running("web", settings) as web_b,
    ):
        webs = {"a": web_a, "b": web_b}
        for url in webs.values():  # no worker runs: Redis holds the queue, the receivers stay ready
            assert await ready(session, url) == (
                200,
                {"status": "ready", "reasons": [], "checks": {"redis": {"ok": True}}},
            )
        for name, url in webs.items():
            for number in range(sent[name]):
                body = magnews_event(f"{name}-{number}", "contacts/delete")
                async with session.post(f"{url}/webhooks/magnews", json=body) as response:
                    assert response.status == 200
        async with session.post(f"{web_b}/webhooks/magnews", json=magnews_event("a-0", "contacts/delete")) as response:
            assert (await response.json())["duplicates"] == 1, "stored through web a, a duplicate through web b"

        async with running("worker", settings, MAGBRIDGE_WORKER_PROBES="true") as worker:

            async def all_finished() -> bool:
                samples = await scrape(session, f"{worker}/metrics")
                return total(samples, "magbridge_events_finished_total") == len(ids)

            await wait_until(all_finished, timeout=30)
            worker_samples = await scrape(session, f"{worker}/metrics")
            worker_ready = await ready(session, worker)
            during = {name: await scrape(session, f"{url}/metrics") for name, url in webs.items()}
        after = {name: await scrape(session, f"{url}/metrics") for name, url in webs.items()}

    # Each web process counts the requests it answered and the events it stored: the sums are right.
    assert value(after["a"], "magbridge_http_requests_total", **HOOK) == 7
    assert value(after["b"], "magbridge_http_requests_total", **HOOK) == 5 + 1
    assert sum(value(samples, "magbridge_http_requests_total", **HOOK) for samples in after.values()) == 13
    received = [total(samples, "magbridge_received_total", source="magnews") for samples in after.values()]
    assert received == [7, 5] and sum(received) == len(ids)
    assert [total(samples, "magbridge_duplicates_total") for samples in after.values()] == [0, 1]

    # The queue series are read from Redis: the same on both (take max, not sum), and only there.
    for samples in (during, after):
        for gauge in QUEUE_GAUGES:
            assert value(samples["a"], gauge, **QUEUE) == value(samples["b"], gauge, **QUEUE), gauge
    assert value(during["a"], "magbridge_worker_up", **QUEUE) == 1
    assert value(after["a"], "magbridge_events_indexed", **QUEUE) == len(ids)
    assert value(after["a"], "magbridge_queue_depth", **QUEUE) == 0
    assert value(after["a"], "magbridge_worker_up", **QUEUE) == 0, "the worker removed its heartbeat"
    assert "magbridge_deliveries_total" not in names(after["a"]) | names(after["b"])

    # The worker's own figures, on its probe port: what it delivered, and nothing of the queue's.
    broadcasts = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
    assert len(broadcasts) == len(ids)
    assert value(worker_samples, "magbridge_deliveries_total", destination="magicbell", outcome="delivered") == len(ids)
    assert value(worker_samples, "magbridge_events_finished_total", status="delivered") == len(ids)
    assert value(worker_samples, "magbridge_delivery_latency_seconds_count", destination="magicbell") == len(ids)
    assert not [labels for _, labels in worker_samples if ("scope", "queue") in labels]
    assert "magbridge_http_requests_total" not in names(worker_samples)
    for samples in (worker_samples, *after.values()):
        assert total(samples, "magbridge_build_info") == 1
    status, body = worker_ready
    assert status == 200 and body["checks"] == {"redis": {"ok": True}, "worker": {"ok": True}}


async def test_magbridge_run_shows_web_and_worker_series_in_one_scrape(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = make_settings()
    async with aiohttp.ClientSession() as session, running("run", settings) as bridge:
        body = [magnews_event(f"run-{number}", "contacts/delete") for number in range(3)]
        async with session.post(f"{bridge}/webhooks/magnews", json=body) as response:
            assert response.status == 200

        async def all_finished() -> bool:
            samples = await scrape(session, f"{bridge}/metrics")
            return value(samples, "magbridge_events_finished_total", status="delivered") == 3

        await wait_until(all_finished, timeout=30)
        samples = await scrape(session, f"{bridge}/metrics")
    assert value(samples, "magbridge_http_requests_total", **HOOK) == 1
    assert total(samples, "magbridge_received_total") == 3
    assert value(samples, "magbridge_deliveries_total", destination="magicbell", outcome="delivered") == 3
    assert value(samples, "magbridge_worker_up", **QUEUE) == 1
    assert total(samples, "magbridge_build_info") == 1, "one process, one registry"
