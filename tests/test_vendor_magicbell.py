"""MagicBell outcomes the bridge cannot know, under each reading of the spec: a broadcast whose create
timed out, dropped its connection or got a 5xx is read back (``GET /broadcasts/{id}``) before it is
sent again; a 4xx to a repeated id is read back instead of dead-lettered; the broadcast's delivery
status is kept on its action."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from bridge.simulators import Simulators
from bridge.simulators.common import SIM_CORE
from bridge.simulators.magicbell import MAGICBELL_STORE
from config.errors import PermanentDeliveryError
from tests.conftest import SettingsFactory
from tests.support.events import magnews_event
from tests.support.simulators import sim_requests, sim_state
from tests.support.store import event_record, requeue
from tests.support.workers import run_worker_burst
from workers.destinations.magicbell import MagicBellClient, broadcast_status
from workers.mapping import BROADCAST_ID_NAMESPACE

IDEMPOTENCY = ("honoured", "ignored")
REPEATED_ID = ("409", "422", "replay")
READINGS = [(idempotency, repeated) for idempotency in IDEMPOTENCY for repeated in REPEATED_ID]


def _choose(app: web.Application, idempotency: str, repeated_id: str) -> None:
    app[SIM_CORE].readings.update({"idempotency": idempotency, "repeated_id": repeated_id})


def _broadcast(key: str, *, emails: tuple[str, ...] = ("ops@example.com",)) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(BROADCAST_ID_NAMESPACE, key)),
        "title": "t",
        "content": "c",
        "recipients": [{"email": email} for email in emails],
        "custom_attributes": {"magbridge_event_id": "e-" + key},
    }


@pytest.mark.parametrize(("idempotency", "repeated_id"), READINGS)
async def test_simulator_repeated_id_and_idempotency_readings(
    simulators: Simulators, idempotency: str, repeated_id: str
) -> None:
    _choose(simulators.magicbell_app, idempotency, repeated_id)
    base = simulators.endpoints.magicbell_base_url
    body = _broadcast("k1")
    headers = {"Authorization": "Bearer sim-magicbell-token", "Idempotency-Key": "k1"}
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(2):
            async with session.post(f"{base}/broadcasts", json=body, headers=headers) as response:
                statuses.append(response.status)
        async with session.get(f"{base}/broadcasts/{body['id'].upper()}", headers=headers) as response:
            assert response.status == 200
            fetched = await response.json()
    expected_second = 201 if idempotency == "honoured" or repeated_id == "replay" else int(repeated_id)
    assert statuses == [201, expected_second]
    assert fetched["id"] == body["id"]
    assert (await sim_state(base))["side_effects"] == 1, "ids are unique: no reading creates a second"


async def test_simulator_reports_failed_recipients_once_processed(simulators: Simulators) -> None:
    base = simulators.endpoints.magicbell_base_url
    body = _broadcast("k2", emails=("a@example.com", "b@bounce.invalid", "c@x.invalid"))
    headers = {"Authorization": "Bearer sim-magicbell-token"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/broadcasts", json=body, headers=headers) as response:
            created = await response.json()
        async with session.get(f"{base}/broadcasts/{body['id']}", headers=headers) as response:
            fetched = await response.json()
    assert created["status"]["status"] == "enqueued"
    assert fetched["status"] == {
        "status": "processed",
        "summary": {"total": 3, "failures": 2},
        "errors": [
            {"message": "b@bounce.invalid: undeliverable address"},
            {"message": "c@x.invalid: undeliverable address"},
        ],
    }
    assert broadcast_status(fetched) == {
        "status": "processed",
        "total": 3,
        "failures": 2,
        "errors": ["b@bounce.invalid: undeliverable address", "c@x.invalid: undeliverable address"],
        "text": "processed, 2 of 3 recipients failed",
    }


@pytest.mark.parametrize("repeated_id", REPEATED_ID)
async def test_client_reads_back_a_refused_repeated_id(
    simulators: Simulators, make_settings: SettingsFactory, repeated_id: str
) -> None:
    _choose(simulators.magicbell_app, "ignored", repeated_id)
    settings = make_settings()
    body = _broadcast("k3")
    async with aiohttp.ClientSession() as session:
        client = MagicBellClient.from_settings(session, settings)
        first = await client.create_broadcast(body, idempotency_key="k3")
        again = await client.create_broadcast(body, idempotency_key="k3")
        other = _broadcast("k3") | {"custom_attributes": {"magbridge_event_id": "someone-else"}}
        if repeated_id != "replay":
            with pytest.raises(PermanentDeliveryError):
                await client.create_broadcast(other, idempotency_key="k3-other")
    assert first.status == 201
    methods = [
        (r["method"], r["status"])
        for r in await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts", "")
    ]
    if repeated_id == "replay":
        assert getattr(again, "outcome", None) == "delivered"
        assert methods == [("POST", 201), ("POST", 201)]
    else:
        assert getattr(again, "outcome", None) == "confirmed", "a 4xx to our own id is read back, not dead"
        assert methods[:3] == [("POST", 201), ("POST", int(repeated_id)), ("GET", 200)]
    assert (await sim_state(simulators.endpoints.magicbell_base_url))["side_effects"] == 1


async def test_a_real_validation_error_is_still_permanent(
    simulators: Simulators, make_settings: SettingsFactory
) -> None:
    body = _broadcast("k4") | {"title": ""}
    async with aiohttp.ClientSession() as session:
        client = MagicBellClient.from_settings(session, make_settings())
        with pytest.raises(PermanentDeliveryError) as raised:
            await client.create_broadcast(body, idempotency_key="k4")
    assert raised.value.status == 422
    requests = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts", "")
    assert [(r["method"], r["status"]) for r in requests] == [("POST", 422), ("GET", 404)]


ADMIN_TOKEN = "admin-token-for-tests-0123456789"
EVENTS = 5


def _counts(simulators: Simulators, records: list[dict[str, Any]]) -> dict[str, int]:
    store = simulators.magicbell_app[MAGICBELL_STORE]
    per_event: dict[str, int] = {}
    for broadcast in store.broadcasts.values():
        event_id = broadcast["custom_attributes"]["magbridge_event_id"]
        per_event[event_id] = per_event.get(event_id, 0) + 1
    return {
        "sent": len(records),
        "delivered": sum(record["status"] == "delivered" for record in records),
        "dead": sum(record["status"] == "failed" for record in records),
        "duplicated": sum(count - 1 for count in per_event.values()),
        "side_effects": store.side_effects,
    }


@pytest.mark.slow
@pytest.mark.parametrize(("idempotency", "repeated_id"), READINGS)
async def test_unknown_outcomes_are_read_back_end_to_end(
    make_settings: SettingsFactory,
    start_service: Any,
    simulators: Simulators,
    redis: aioredis.Redis,
    idempotency: str,
    repeated_id: str,
) -> None:
    """Phase 1: every request is slower (600 ms) than the client's timeout (0.3 s) for 0.8 s, so each
    create's outcome is unknown though the simulator does create it; the attempts after read back, and
    find it. Phase 2: a worker that died after its sends (no record, no ledger) runs them again: the
    repeated id gets the reading's answer (replay, 409 or 422), which is read back, not dead-lettered."""
    _choose(simulators.magicbell_app, idempotency, repeated_id)
    settings = make_settings(
        http_timeout_seconds=0.3,
        breaker_failures=1000,
        admin_token=ADMIN_TOKEN,
        magicbell_recipients=["ops@example.com", "gone@bounce.invalid"],
    )
    service = await start_service(settings)
    base = simulators.endpoints.magicbell_base_url
    ids = [f"lost-{n}" for n in range(EVENTS)]
    simulators.magicbell_app[SIM_CORE].faults.latency_ms = 600
    for event_id in ids:
        async with service.post_webhook(magnews_event(event_id, "contacts/delete")) as response:
            assert response.status == 200
    burst = asyncio.create_task(run_worker_burst(settings))
    await asyncio.sleep(0.8)
    simulators.magicbell_app[SIM_CORE].faults.latency_ms = 0
    await burst
    await asyncio.sleep(0.7)  # the last slow requests finish on the simulator

    records = [await event_record(redis, event_id) for event_id in ids]
    counts = _counts(simulators, records)
    assert counts == {"sent": EVENTS, "delivered": EVENTS, "dead": 0, "duplicated": 0, "side_effects": EVENTS}
    posts = await sim_requests(base, "/broadcasts")
    assert len(posts) == EVENTS, "no create was sent twice: each resend was a read-back"
    for record in records:
        action = record["actions"][0]
        outcomes = [attempt["outcome"] for attempt in action["attempts"]]
        assert outcomes[0] == "transient" and outcomes[-1] == "confirmed", outcomes
        assert action["unsure"] == [], "cleared once delivered"
        assert action["vendor_status"]["text"] == "processed, 1 of 2 recipients failed"
        ledger = orjson.loads(await redis.get(f"mb:ledger:{action['key']}") or b"{}")
        assert ledger.get("outcome") == "confirmed"
    async with service.session.get(
        f"{service.url}/admin/events/{ids[0]}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as response:
        assert response.status == 200
        shown = await response.json()
    assert shown["actions"][0]["vendor_status"]["text"] == "processed, 1 of 2 recipients failed"

    # Phase 2: as if the worker had died after sending: no action record, no ledger entry.
    for event_id, record in zip(ids, records, strict=True):
        await redis.delete(f"mb:ledger:{record['actions'][0]['key']}", f"mb:actions:{event_id}")
    await requeue(redis, ids)
    await run_worker_burst(settings)
    records = [await event_record(redis, event_id) for event_id in ids]
    counts = _counts(simulators, records)
    print(f"\nmagicbell idempotency={idempotency} repeated_id={repeated_id}: {counts}")
    assert counts == {"sent": EVENTS, "delivered": EVENTS, "dead": 0, "duplicated": 0, "side_effects": EVENTS}
    reposts = (await sim_requests(base, "/broadcasts"))[EVENTS:]
    assert len(reposts) == EVENTS
    expected = 201 if idempotency == "honoured" or repeated_id == "replay" else int(repeated_id)
    assert {post["status"] for post in reposts} == {expected}
    final = "confirmed" if expected >= 400 else "delivered"
    assert {record["actions"][0]["attempts"][-1]["outcome"] for record in records} == {final}
