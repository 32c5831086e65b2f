"""The webhook receiver on a real socket against a private Redis."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from arq.constants import job_key_prefix

from bridge.events import canonical_json
from config.settings import Settings
from tests.support.redis_server import RedisServer
from tests.support.service import Service, SettingsFactory
from tests.support.store import queued_batches

EVENT = {
    "id": "evt-1",
    "topic": "contacts/update",
    "timestamp": "2025-11-14T13:00:00Z",
    "data": {"idcontact": 500106, "iddatabase": 7, "email": "a@example.com", "status": "subscribed"},
}


def _event(event_id: str, topic: str = "contacts/update") -> dict[str, Any]:
    return {**EVENT, "id": event_id, "topic": topic}


async def _json(response: aiohttp.ClientResponse) -> Any:
    return json.loads(await response.text())


async def test_one_event_is_stored_indexed_and_queued(
    service: Service, settings: Settings, redis: aioredis.Redis
) -> None:
    async with service.post_webhook(EVENT) as response:
        assert response.status == 200
        assert await response.json() == {"accepted": 1, "duplicates": 0, "event_ids": ["evt-1"]}

    stored = await redis.hgetall("mb:event:evt-1")
    assert stored[b"source"] == b"magnews"
    assert stored[b"type"] == b"contacts/update"
    assert stored[b"status"] == b"queued"
    assert stored[b"occurred_at"] == b"2025-11-14T13:00:00.000Z"
    assert json.loads(stored[b"payload"]) == EVENT
    assert await redis.zscore("mb:events", "evt-1") is not None
    [job] = await redis.queued_jobs()
    assert stored[b"job"].decode() == job.job_id, "the event names the job that owns it"
    assert (job.function, list(job.args), job.kwargs) == ("deliver_events", [], {})
    assert await queued_batches(redis) == {job.job_id: ["evt-1"]}, "the job's batch holds the event"
    # arq keeps a job that no worker started for the retention window, not its default day.
    assert settings.retention_seconds - 60 < await redis.ttl(job_key_prefix + job.job_id) <= settings.retention_seconds


async def test_repeats_are_acknowledged_as_duplicates(service: Service, redis: aioredis.Redis) -> None:
    batch = [_event("a"), _event("b"), _event("a")]
    async with service.post_webhook(batch) as response:
        assert await response.json() == {"accepted": 2, "duplicates": 1, "event_ids": ["a", "b", "a"]}
    async with service.post_webhook(batch) as response:
        assert await response.json() == {"accepted": 0, "duplicates": 3, "event_ids": ["a", "b", "a"]}
    assert list((await queued_batches(redis)).values()) == [["a", "b"]], "one job for the new events"
    assert await redis.hgetall("mb:stats") == {b"received|source=magnews": b"2", b"duplicates|source=magnews": b"4"}


async def test_event_without_id_gets_a_content_hash(service: Service, redis: aioredis.Redis) -> None:
    body = {"topic": "contacts/create", "data": {"email": "x@example.com", "fields": {"name": "Ada"}}}
    reordered = {"data": {"fields": {"name": "Ada"}, "email": "x@example.com"}, "topic": "contacts/create"}
    expected = hashlib.sha256(f"contacts/create\n{canonical_json(body)}".encode()).hexdigest()
    async with service.post_webhook(body) as response:
        assert (await response.json())["event_ids"] == [expected]
    async with service.post_webhook(reordered) as response:
        assert await response.json() == {"accepted": 0, "duplicates": 1, "event_ids": [expected]}
    occurred_at = (await redis.hget(f"mb:event:{expected}", "occurred_at")).decode()
    assert occurred_at.endswith("Z") and occurred_at[:2] == "20", "no timestamp: the time of receipt"


async def test_magnews_test_request_is_answered_without_work(service: Service, redis: aioredis.Redis) -> None:
    async with service.post_webhook({"topic": "webhooks/test", "test": True}) as response:
        assert response.status == 200
        assert (await response.json())["test"] is True
    assert await redis.dbsize() == 0


@pytest.mark.parametrize(
    ("body", "headers", "status", "detail_part"),
    [
        (b'{"topic": "contacts/update", ', {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b'[{"topic": "a"}, 5]', {"Content-Type": "application/json"}, 400, "[1]: each event must be a JSON object"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "not UTF-8"),
        (b'{"topic": "a"}', {"Content-Type": "text/plain"}, 415, "application/json"),
        (b'{"topic": "a"}', {}, 415, "application/json"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_stored(
    service: Service, redis: aioredis.Redis, body: bytes, headers: dict[str, str], status: int, detail_part: str
) -> None:
    async with service.session.post(f"{service.url}/webhooks/magnews", data=body, headers=headers) as response:
        assert response.status == status
        assert response.content_type == "application/problem+json"
        problem = await _json(response)
    assert problem["status"] == status
    assert detail_part in problem["detail"]
    assert await redis.dbsize() == 0


async def test_oversize_body_gets_413_and_nothing_is_stored(service: Service, redis: aioredis.Redis) -> None:
    big = json.dumps([_event(f"e{i}") | {"data": {"blob": "x" * 2000}} for i in range(600)]).encode()
    headers = {"Content-Type": "application/json"}
    async with service.session.post(
        f"{service.url}/webhooks/magnews", data=io.BytesIO(big), headers=headers
    ) as response:
        assert response.status == 413
        assert response.content_type == "application/problem+json"
        assert "limit" in (await _json(response))["detail"]
    assert await redis.dbsize() == 0


async def test_too_many_events_in_one_request(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(webhook_max_events=3))
    async with service.post_webhook([_event(str(i)) for i in range(4)]) as response:
        assert response.status == 413
        assert "at most 3" in (await _json(response))["detail"]
    assert await redis.dbsize() == 0


async def test_wrong_method_is_a_problem_document(service: Service) -> None:
    async with service.session.get(f"{service.url}/webhooks/magnews") as response:
        assert response.status == 405
        assert response.content_type == "application/problem+json"
        assert "GET is not allowed" in (await _json(response))["detail"]


async def test_webhook_secret_is_required_when_set(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(webhook_secret="s3cret"))
    async with service.post_webhook(_event("one")) as response:
        assert response.status == 401
        assert "missing" in (await _json(response))["detail"]
    async with service.post_webhook(_event("one"), params={"token": "wrong"}) as response:
        assert response.status == 401
    assert await redis.dbsize() == 0
    async with service.post_webhook(_event("one"), params={"token": "s3cret"}) as response:
        assert response.status == 200
    async with service.post_webhook(_event("two"), headers={"X-Webhook-Token": "s3cret"}) as response:
        assert response.status == 200


async def test_redis_down_gives_503_and_the_receiver_recovers(
    service: Service, redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        async with service.post_webhook(_event("during-outage")) as response:
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            assert "nothing was stored" in (await _json(response))["detail"]
        async with service.session.get(f"{service.url}/readyz") as response:
            assert response.status == 503
            assert "redis" in (await response.json())["reasons"][0]
        async with service.session.get(f"{service.url}/healthz") as response:
            assert response.status == 200
    finally:
        redis_server.start()
    async with service.post_webhook(_event("after-outage")) as response:
        assert response.status == 200
        assert (await response.json())["accepted"] == 1
    assert await redis.exists("mb:event:after-outage") == 1
    assert await redis.exists("mb:event:during-outage") == 0


async def test_concurrent_requests_share_script_calls_and_get_their_own_answers(
    service: Service, redis: aioredis.Redis
) -> None:
    await redis.config_resetstat()

    async def post(number: int) -> Any:
        async with service.post_webhook([_event(f"c{number}"), _event("shared")]) as response:
            assert response.status == 200
            return await response.json()

    answers = await asyncio.gather(*(post(n) for n in range(60)))
    assert [answer["event_ids"] for answer in answers] == [[f"c{n}", "shared"] for n in range(60)]
    assert sum(answer["accepted"] for answer in answers) == 61, "'shared' is accepted exactly once"
    assert sum(answer["duplicates"] for answer in answers) == 59
    calls = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    assert 0 < calls < 60, f"{calls} script calls for 60 concurrent requests"
