"""Deliveries through a real arq worker to the simulators: each default rule, idempotency, failures."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.events import magnify_envelope
from bridge.simulators import Simulators
from bridge.store.reads import EventReader
from config.settings import Settings
from tests.support.events import magnews_event, magnify_metric
from tests.support.service import Service
from tests.support.simulators import set_faults, sim_requests, sim_state
from tests.support.store import drop_jobs, event_record, ingest, requeue
from tests.support.workers import run_worker_burst
from workers.mapping import BROADCAST_ID_NAMESPACE


@pytest.mark.parametrize(
    "topic",
    [
        "contacts/unsubscription",
        "contacts/delete",
        "communications/msg/bounce",
        "transactionals/msg/complaint",
    ],
)
async def test_ops_broadcast_rules(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis, topic: str
) -> None:
    async with service.post_webhook(magnews_event("e1", topic)) as response:
        assert response.status == 200
    await run_worker_burst(settings)

    requests = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
    assert len(requests) == 1
    request = requests[0]
    assert request["status"] == 201
    assert request["headers"]["Authorization"] == "Bearer sim-magicbell-token"
    key = request["headers"]["Idempotency-Key"]
    body = request["body"]
    assert body["id"] == str(uuid.uuid5(BROADCAST_ID_NAMESPACE, key))
    assert body["recipients"] == [{"email": "ops@example.com"}, {"email": "oncall@example.com"}]
    assert body["title"] == f"Magnews {topic}: ada@example.com"
    assert "contact 500106" in body["content"]
    assert body["category"] == "magnews"
    assert body["topic"] == "magnews." + topic.replace("/", ".")
    assert body["custom_attributes"] == {"magbridge_event_id": "e1", "magbridge_rule": "magnews-contact-lost"}
    assert await sim_requests(simulators.endpoints.magnews_base_url, "/v19/contacts") == []

    record = await event_record(redis, "e1")
    assert record["status"] == "delivered"
    assert [action["status"] for action in record["actions"]] == ["delivered"]
    assert record["actions"][0]["key"] == key


async def test_welcome_broadcast_goes_to_the_contact(
    service: Service, settings: Settings, simulators: Simulators
) -> None:
    async with service.post_webhook(magnews_event("w1", "contacts/create", email="new@example.com")) as response:
        assert response.status == 200
    await run_worker_burst(settings)
    [request] = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
    assert request["body"]["recipients"] == [{"email": "new@example.com"}]
    assert request["body"]["title"] == "Welcome, Ada!"
    assert request["body"]["category"] == "welcome"


@pytest.mark.parametrize("topic", ["contacts/update", "communications/msg/open", "something/else"])
async def test_events_without_a_rule_are_ignored_not_dropped(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis, topic: str
) -> None:
    async with service.post_webhook(magnews_event("i1", topic)) as response:
        assert response.status == 200
    await run_worker_burst(settings)
    assert await sim_requests(simulators.endpoints.magicbell_base_url, "/") == []
    assert await sim_requests(simulators.endpoints.magnews_base_url, "/") == []
    assert (await event_record(redis, "i1"))["status"] == "ignored"


_ENGAGEMENT = ["magnify_send_email_delivered", "magnify_send_email_open", "magnify_send_email_click"]
_PROBLEM = ["magnify_send_email_bounce", "magnify_send_email_dropped"]
_OPT_OUT = [
    "magnify_send_email_unsubscribe",
    "magnify_send_email_group_unsubscribe",
    "magnify_send_email_spamreport",
]


@pytest.mark.parametrize("event_type", _ENGAGEMENT + _PROBLEM + _OPT_OUT)
async def test_magnify_rules(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis, event_type: str
) -> None:
    envelope = magnify_envelope(magnify_metric(event_type))
    assert await ingest(redis, [envelope]) == [True]
    await run_worker_burst(settings)

    [merge] = await sim_requests(simulators.endpoints.magnews_base_url, "/v19/contacts/merge")
    assert merge["status"] == 200
    assert merge["headers"]["Authorization"] == "Bearer sim-magnews-token"
    assert merge["headers"]["Idempotency-Key"]
    expected_values = {
        "magnify_user_id": "user_42",
        "magnify_last_event": event_type,
        "magnify_last_event_at": "2022-01-01T00:00:00.000Z",
        "magnify_last_motion": "00000000-0000-0000-0000-000000000001",
    }
    if event_type in _OPT_OUT:
        expected_values["status"] = "unsubscribed"
    consent = {
        "sendemail": False,
        "enterworkflow": False,
        "denysubscribenewcontact": True,
        "denysubscribeunsubscribedcontact": True,
    }
    assert merge["body"] == {"values": expected_values, "options": {**consent, "iddatabase": 7}}

    broadcasts = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
    if event_type in _ENGAGEMENT:
        assert broadcasts == []
    else:
        [broadcast] = broadcasts
        assert broadcast["body"]["recipients"] == [{"email": "ops@example.com"}, {"email": "oncall@example.com"}]
        assert broadcast["body"]["title"].startswith("Magnify ")
        assert "John Doe" in broadcast["body"]["title"]
        assert broadcast["body"]["custom_attributes"]["magbridge_event_id"] == envelope.id
    assert (await event_record(redis, envelope.id))["status"] == "delivered"


async def test_magnify_event_without_a_rule_is_ignored(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    envelope = magnify_envelope(magnify_metric("magnify_send_email_processed"))
    await ingest(redis, [envelope])
    await run_worker_burst(settings)
    assert await sim_requests(simulators.endpoints.magnews_base_url, "/") == []
    assert (await event_record(redis, envelope.id))["status"] == "ignored"


async def test_the_same_webhook_twice_gives_one_side_effect(
    service: Service, settings: Settings, simulators: Simulators
) -> None:
    event = magnews_event("dup", "contacts/unsubscription")
    for body in (event, event, [event, event]):
        async with service.post_webhook(body) as response:
            assert response.status == 200
    await run_worker_burst(settings)
    assert len(await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")) == 1
    assert (await sim_state(simulators.endpoints.magicbell_base_url))["side_effects"] == 1


async def test_a_job_run_twice_sends_nothing_the_second_time(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    async with service.post_webhook(magnews_event("twice", "contacts/delete")) as response:
        assert response.status == 200
    await run_worker_burst(settings)
    await requeue(redis, ["twice"])
    await run_worker_burst(settings)
    assert len(await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")) == 1
    assert (await event_record(redis, "twice"))["status"] == "delivered"


async def test_worker_dying_after_the_send_repeats_no_side_effect(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    """A worker that died after MagicBell answered but before it wrote the ledger: the rerun sends the
    same Idempotency-Key and broadcast id, and MagicBell replays its answer instead of broadcasting."""
    async with service.post_webhook(magnews_event("crash", "contacts/delete")) as response:
        assert response.status == 200
    await run_worker_burst(settings)
    # Forget everything the worker wrote after the send, as if it had died right then.
    for key in await redis.keys("mb:ledger:*"):
        await redis.delete(key)
    await redis.delete("mb:actions:crash")
    await requeue(redis, ["crash"])
    await run_worker_burst(settings)

    requests = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
    assert len(requests) == 2, "the rerun really sent the request again"
    assert requests[0]["headers"]["Idempotency-Key"] == requests[1]["headers"]["Idempotency-Key"]
    assert requests[0]["body"]["id"] == requests[1]["body"]["id"]
    assert (await sim_state(simulators.endpoints.magicbell_base_url))["side_effects"] == 1
    assert (await event_record(redis, "crash"))["status"] == "delivered"


@pytest.mark.slow
async def test_transient_failure_is_retried_and_delivered_once(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    await set_faults(simulators.endpoints.magicbell_base_url, fail_next=[503, 500])
    async with service.post_webhook(magnews_event("flaky", "contacts/delete")) as response:
        assert response.status == 200
    await run_worker_burst(settings)
    requests = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts", method="")
    # After a 5xx the outcome is unknown: the next try reads the broadcast back (GET) before creating it.
    assert [(request["method"], request["status"]) for request in requests] == [
        ("POST", 503),
        ("GET", 500),
        ("GET", 404),
        ("POST", 201),
    ]
    record = await event_record(redis, "flaky")
    assert record["status"] == "delivered"
    assert [attempt["outcome"] for attempt in record["actions"][0]["attempts"]] == [
        "transient",
        "transient",
        "delivered",
    ]
    assert (await sim_state(simulators.endpoints.magicbell_base_url))["side_effects"] == 1


async def test_unrenderable_action_fails_permanently_with_the_reason(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    event = magnews_event("noemail", "contacts/create")
    del event["data"]["email"]
    async with service.post_webhook(event) as response:
        assert response.status == 200
    await run_worker_burst(settings)
    assert await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts") == []
    record = await event_record(redis, "noemail")
    assert record["status"] == "failed"
    [action] = record["actions"]
    assert action["status"] == "dead"
    assert "recipients.0" in action["last_error"] and "email" in action["last_error"]
    assert await redis.zrange("mb:dead", 0, -1) == [b"noemail"]
    assert await redis.ttl("mb:event:noemail") == -1, "dead letters are kept until replayed"


async def test_permanent_rejection_keeps_the_response_body(
    service: Service, make_settings: Any, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = make_settings()
    # Every MagicBell request refused with a 400 (a 401 or 403 would pause MagicBell instead).
    await set_faults(simulators.endpoints.magicbell_base_url, error_rate=1.0, error_status=400)
    async with service.post_webhook(magnews_event("denied", "contacts/delete")) as response:
        assert response.status == 200
    await run_worker_burst(settings)
    [action] = (await event_record(redis, "denied"))["actions"]
    assert action["status"] == "dead"
    assert action["last_response"]["status"] == 400
    assert json.loads(action["last_response"]["body"])["errors"][0]["code"] == "bad_request"
    assert len(await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")) == 1


@pytest.mark.slow
async def test_a_crashing_job_is_retried_then_dead_lettered_with_the_error(
    service: Service, settings: Settings, redis: aioredis.Redis
) -> None:
    from workers.worker import startup

    async def broken_startup(ctx: dict[str, Any]) -> None:
        await startup(ctx)

        async def boom(request: Any) -> Any:
            raise RuntimeError("boom")

        ctx["deps"].senders["magicbell"] = boom

    async with service.post_webhook(magnews_event("bug", "contacts/delete")) as response:
        assert response.status == 200
    await run_worker_burst(settings, on_startup=broken_startup)
    event = await EventReader(redis).get("bug")
    assert event is not None
    assert event.status == "failed"
    assert event.runs == settings.retry_max_attempts
    assert event.error == f"internal error after {settings.retry_max_attempts} tries: RuntimeError: boom"
    assert await redis.zrange("mb:dead", 0, -1) == [b"bug"]


async def test_sweeper_requeues_an_event_whose_job_vanished(
    service: Service, make_settings: Any, simulators: Simulators, redis: aioredis.Redis
) -> None:
    from workers.sweeper import sweep_pending
    from workers.worker import shutdown, startup

    settings = make_settings(sweep_after_seconds=0.01)
    async with service.post_webhook(magnews_event("orphan", "contacts/delete")) as response:
        assert response.status == 200
    # As if arq had dropped the job: the queue entry and the job record are gone.
    await drop_jobs(redis)
    # Without the cron sweeper, which would otherwise re-queue it should the burst cross a minute.
    await run_worker_burst(settings, cron_jobs=[])
    assert (await event_record(redis, "orphan"))["status"] == "queued"

    ctx: dict[str, Any] = {"redis": redis, "settings": settings}
    await startup(ctx)
    try:
        assert await sweep_pending(ctx) == 1
    finally:
        await shutdown(ctx)
    await run_worker_burst(settings)
    assert (await event_record(redis, "orphan"))["status"] == "delivered"
    assert len(await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")) == 1
    assert await redis.zscore("mb:pending", "orphan") is None
