"""The three windows of what Redis keeps, on a real Redis with short settings: the dedupe marker for the
dedupe window, a delivered record for the record retention, a dead letter until handled; and the
records stored before the markers existed (an upgrade) still dedupe."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.simulators import Simulators
from bridge.store import keys
from config.errors import ConfigError
from config.settings import load_settings
from tests.support.events import magnews_event
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import sim_requests
from tests.support.workers import run_worker_burst

TOKEN = "admin-token-for-tests-0123456789"
RECORD_SECONDS = 1.5
DAY_MS = 86_400_000


async def post(service: Service, *events: dict[str, Any]) -> dict[str, Any]:
    async with service.post_webhook(list(events)) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


async def get_event(service: Service, event_id: str) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with service.session.get(f"{service.url}/admin/events/{event_id}", headers=headers) as response:
        return response.status, json.loads(await response.text())


@pytest.mark.slow
async def test_each_record_kind_keeps_its_own_window(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis, simulators: Simulators
) -> None:
    settings = make_settings(admin_token=TOKEN, record_retention_hours=RECORD_SECONDS / 3600)
    service = await start_service(settings)
    await post(service, magnews_event("keep", "contacts/delete"), magnews_event("bad", "contacts/create", email=None))
    await run_worker_burst(settings)

    window_ms = settings.retention_seconds * 1000
    assert 0 < await redis.pttl(keys.event("keep")) <= RECORD_SECONDS * 1000, "a delivered record: its retention"
    assert 0 < await redis.pttl(keys.actions("keep")) <= RECORD_SECONDS * 1000
    for marker in (keys.seen("keep"), keys.seen("bad")):
        assert window_ms - 60_000 < await redis.pttl(marker) <= window_ms, "the marker: the dedupe window"
    ledger = await redis.keys(keys.LEDGER_PREFIX + "*")
    ledger_ttls = [await redis.pttl(key) for key in ledger]
    assert ledger_ttls and all(0 < ttl <= RECORD_SECONDS * 1000 for ttl in ledger_ttls), "delivered: as its record"
    assert await redis.pttl(keys.event("bad")) == -1, "a dead letter is kept until handled"
    assert await redis.pttl(keys.actions("bad")) == -1

    await asyncio.sleep(RECORD_SECONDS + 0.2)
    assert await redis.exists(keys.event("keep"), keys.actions("keep")) == 0
    assert await redis.exists(keys.event("bad")) == 1

    status, problem = await get_event(service, "keep")
    assert status == 404
    assert "its record has expired" in problem["detail"] and "still answered as a duplicate" in problem["detail"]
    assert "MAGBRIDGE_RECORD_RETENTION_HOURS" in problem["detail"]
    status, problem = await get_event(service, "never-sent")
    assert status == 404 and "never received" in problem["detail"]

    answer = await post(service, magnews_event("keep", "contacts/delete"))
    assert (answer["accepted"], answer["duplicates"]) == (0, 1), "within the window, after the record expired"
    await run_worker_burst(settings)
    assert len(await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")) == 1, "not delivered twice"


async def test_a_record_stored_before_the_markers_still_dedupes(service: Service, redis: aioredis.Redis) -> None:
    # What an upgraded deployment holds: a record with the old TTL and no marker.
    await redis.hset(keys.event("old"), mapping={"status": "delivered", "source": "magnews"})  # type: ignore[misc]
    await redis.pexpire(keys.event("old"), 3_600_000)
    answer = await post(service, magnews_event("old", "contacts/delete"), magnews_event("new", "contacts/delete"))
    assert (answer["accepted"], answer["duplicates"]) == (1, 1)
    assert await redis.exists(keys.seen("old")) == 0, "no marker needed: the record answers until it expires"
    assert await redis.exists(keys.seen("new")) == 1


async def test_a_short_dedupe_window_ends_the_marker_and_the_id_is_new_again(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(retention_days=1 / 86400))  # one second
    assert (await post(service, magnews_event("e1", "contacts/delete")))["accepted"] == 1
    assert 0 < await redis.pttl(keys.seen("e1")) <= 1000
    await asyncio.sleep(1.1)
    assert await redis.exists(keys.seen("e1"), keys.event("e1")) == 0, "an undelivered record ends with the window"
    assert (await post(service, magnews_event("e1", "contacts/delete")))["accepted"] == 1


def test_the_record_retention_is_at_most_the_dedupe_window_and_a_bad_value_is_named() -> None:
    assert load_settings(record_retention_hours=24, retention_days=7).record_retention_seconds == 86_400
    assert load_settings(record_retention_hours=500, retention_days=7).record_retention_seconds == 7 * 86_400
    with pytest.raises(ConfigError, match="MAGBRIDGE_RECORD_RETENTION_HOURS"):
        load_settings(record_retention_hours=0)


async def test_a_replay_keeps_the_record_until_it_settles_again(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    """A delivered record near the end of its retention, replayed: it cannot lapse mid-run, and settling
    gives it its retention again."""
    settings = make_settings(admin_token=TOKEN, record_retention_hours=30 / 3600)
    service = await start_service(settings)
    await post(service, magnews_event("late", "contacts/delete"))
    await run_worker_burst(settings)
    assert 0 < await redis.pttl(keys.event("late")) <= 30_000

    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"event_ids": ["late"], "force": True}
    async with service.session.post(f"{service.url}/admin/replay", json=body, headers=headers) as response:
        assert response.status == 202, await response.text()
    assert await redis.pttl(keys.event("late")) == -1, "queued again: kept until it settles"
    assert await redis.pttl(keys.actions("late")) == -1

    await run_worker_burst(settings)
    assert (await get_event(service, "late"))[1]["status"] == "delivered"
    assert 0 < await redis.pttl(keys.event("late")) <= 30_000, "delivered again: its retention again"
