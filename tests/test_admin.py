"""The admin API on a real socket: auth, listing, one event's history, dead letters, replays, retention."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.cli import main
from bridge.simulators import Simulators
from bridge.store.connections import open_redis
from bridge.store.ingest import EventWriter
from bridge.store.reads import EventReader
from tests.support.events import magnews_event, magnify_metric
from tests.support.redis_server import RedisServer
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import set_faults, sim_requests, sim_state
from tests.support.store import drop_jobs, ingest, mark_dead, queued_batches
from tests.support.workers import run_worker_burst

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = [
    ("GET", "/admin/events"),
    ("GET", "/admin/events/e1"),
    ("GET", "/admin/dead-letters"),
    ("POST", "/admin/replay"),
]


class Admin:
    """The admin API of a running service, with the token."""

    def __init__(self, service: Service):
        self.service = service

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        async with self.service.session.get(f"{self.service.url}{path}", params=params, headers=AUTH) as response:
            return response.status, json.loads(await response.text())

    async def replay(self, **body: Any) -> tuple[int, Any]:
        async with self.service.session.post(f"{self.service.url}/admin/replay", json=body, headers=AUTH) as response:
            return response.status, json.loads(await response.text())


@pytest.fixture
async def admin(start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis) -> Admin:
    return Admin(await start_service(make_settings(admin_token=TOKEN)))


async def post(admin: Admin, *events: dict[str, Any]) -> None:
    async with admin.service.post_webhook(list(events)) as response:
        assert response.status == 200


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_admin_routes_need_the_token(admin: Admin, method: str, path: str) -> None:
    url = admin.service.url + path
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": ""}):
        async with admin.service.session.request(method, url, headers=headers, json={}) as response:
            assert response.status == 401, headers
            assert response.content_type == "application/problem+json"
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="magbridge-admin"'
            body = await response.json(content_type=None)
            assert body["status"] == 401 and body["instance"] == path
            assert TOKEN not in await response.text()


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_admin_api_is_off_without_a_configured_token(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis, method: str, path: str
) -> None:
    service = await start_service(make_settings())  # no admin_token
    async with service.session.request(method, service.url + path, headers=AUTH, json={}) as response:
        assert response.status == 503
        assert response.content_type == "application/problem+json"
        assert "MAGBRIDGE_ADMIN_TOKEN is not set" in (await response.json(content_type=None))["detail"]


async def test_listing_filters_and_pages_with_a_cursor(admin: Admin, settings: Any) -> None:
    topics = ["contacts/delete", "communications/msg/bounce", "contacts/update", "transactionals/msg/bounce"]
    for number in range(8):
        await post(admin, magnews_event(f"l{number}", topics[number % 4]))
    await run_worker_burst(settings)

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(4):
        status, page = await admin.get("/admin/events", limit="3", **({"cursor": cursor} if cursor else {}))
        assert status == 200
        seen += [event["id"] for event in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"l{number}" for number in reversed(range(8))], "newest first, each once"

    status, page = await admin.get("/admin/events", type="*/msg/bounce")
    assert [event["id"] for event in page["events"]] == ["l7", "l5", "l3", "l1"]
    status, page = await admin.get("/admin/events", status="ignored", source="magnews")
    assert [event["id"] for event in page["events"]] == ["l6", "l2"]
    assert page["events"][0]["type"] == "contacts/update"
    assert page["events"][0]["received_at"].endswith("Z")
    status, page = await admin.get("/admin/events", source="magnify")
    assert page == {"events": [], "count": 0, "next_cursor": None}
    status, page = await admin.get("/admin/events", since="1h", until=str(2**42))
    assert page["count"] == 8
    status, page = await admin.get("/admin/events", until="2001-01-01T00:00:00Z")
    assert page["count"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-40"}, "until"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"colour": "red"}, "colour"),
        ({"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, "since"),
    ],
)
async def test_an_invalid_filter_is_a_400_naming_it(admin: Admin, params: dict[str, str], field: str) -> None:
    status, body = await admin.get("/admin/events", **params)
    assert status == 400
    assert body["errors"][0]["field"] == field
    assert body["detail"].startswith(f"{field}: ")


async def test_one_event_shows_payload_actions_attempts_and_outcome(
    admin: Admin, settings: Any, simulators: Simulators
) -> None:
    event = magnews_event("shown", "contacts/delete")
    await post(admin, event)
    status, body = await admin.get("/admin/events/shown")
    assert status == 200
    assert body["status"] == "queued" and body["job"] is not None and body["actions"] == []
    await run_worker_burst(settings)

    status, body = await admin.get("/admin/events/shown")
    assert status == 200
    assert body["payload"] == event
    assert (body["id"], body["source"], body["type"], body["status"]) == (
        "shown",
        "magnews",
        "contacts/delete",
        "delivered",
    )
    [action] = body["actions"]
    [sent] = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
    assert action["key"] == sent["headers"]["Idempotency-Key"]
    assert (action["rule"], action["destination"], action["status"]) == (
        "magnews-contact-lost",
        "magicbell",
        "delivered",
    )
    assert (action["generation"], action["current"]) == (0, True)
    assert [attempt["outcome"] for attempt in action["attempts"]] == ["delivered"]
    assert action["last_response"]["status"] == 201
    # A success keeps the start of its answer (MagicBell echoes the whole broadcast): 200 characters.
    assert len(action["last_response"]["body"]) == 201 and action["last_response"]["body"].endswith("…")
    assert body["replays"] == [] and body["dead_letter_at"] is None and body["job"] is None
    assert 0 < body["expires_in_seconds"] <= settings.retention_seconds

    status, body = await admin.get("/admin/events/nope")
    assert status == 404 and "nope" in body["detail"]


async def test_dead_letters_replayed_after_the_fix_are_delivered_exactly_once(
    admin: Admin, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    await post(admin, magnews_event("d1", "contacts/delete"), magnews_event("d2", "communications/msg/bounce"))
    # The fault: MagicBell refuses every request with a 400 (a permanent failure; a 401 would pause it).
    await set_faults(simulators.endpoints.magicbell_base_url, error_rate=1.0, error_status=400)
    await run_worker_burst(make_settings())
    await set_faults(simulators.endpoints.magicbell_base_url, error_rate=0.0)

    status, body = await admin.get("/admin/dead-letters")
    assert status == 200
    assert [letter["id"] for letter in body["dead_letters"]] == ["d2", "d1"] and body["total"] == 2
    [failed] = body["dead_letters"][0]["failed_actions"]
    assert failed["destination"] == "magicbell" and failed["last_response"]["status"] == 400
    assert "400" in failed["last_error"] and failed["attempts"] == 1

    # dry_run: says what it would replay and changes nothing.
    before = {key: await redis.dump(key) for key in await redis.keys("mb:*")}
    status, result = await admin.replay(dead_letters=True, dry_run=True)
    assert status == 202
    assert result["replayed"] == ["d1", "d2"] and result["dry_run"] is True
    assert result["events"][0] == {"id": "d1", "previous_status": "failed", "generation": 0, "reset_actions": 1}
    assert {key: await redis.dump(key) for key in await redis.keys("mb:*")} == before
    assert await redis.queued_jobs() == []

    # The fault is fixed (MagicBell accepts again): replay, deliver each once.
    status, result = await admin.replay(dead_letters=True)
    assert status == 202 and result["replayed"] == ["d1", "d2"]
    assert await redis.zcard("mb:dead") == 0
    await run_worker_burst(make_settings())
    sent = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
    assert [request["status"] for request in sent] == [400, 400, 201, 201]
    assert (await sim_state(simulators.endpoints.magicbell_base_url))["side_effects"] == 2
    status, body = await admin.get("/admin/dead-letters")
    assert body["dead_letters"] == [] and body["total"] == 0

    status, body = await admin.get("/admin/events/d1")
    assert body["status"] == "delivered" and body["dead_letter_at"] is None
    [replay] = body["replays"]
    assert replay["mode"] == "dead_letters" and replay["by"] == "admin-api" and replay["force"] is False
    assert replay["previous_status"] == "failed" and replay["reset_actions"] == 1
    [action] = body["actions"]
    assert [attempt["outcome"] for attempt in action["attempts"]] == ["permanent", "delivered"]
    assert body["expires_in_seconds"] is not None, "a delivered dead letter expires again like any event"

    # A second replay of dead letters finds none; the delivered ones are not sent again.
    status, result = await admin.replay(dead_letters=True)
    assert result["replayed"] == []


async def test_replay_of_a_delivered_event_sends_nothing_unless_forced(
    admin: Admin, settings: Any, simulators: Simulators, redis: aioredis.Redis
) -> None:
    await post(admin, magnews_event("once", "contacts/delete"))
    await run_worker_burst(settings)
    broadcasts = simulators.endpoints.magicbell_base_url

    status, result = await admin.replay(event_ids=["once", "missing"])
    assert status == 202
    assert result["replayed"] == ["once"] and result["not_found"] == ["missing"]
    await run_worker_burst(settings)
    assert len(await sim_requests(broadcasts, "/broadcasts")) == 1, "the ledger skips what was delivered"

    status, result = await admin.replay(event_ids=["once"], force=True)
    assert result["events"] == [{"id": "once", "previous_status": "delivered", "generation": 1, "reset_actions": 0}]
    await run_worker_burst(settings)
    first, second = await sim_requests(broadcasts, "/broadcasts")
    assert second["status"] == 201
    assert first["headers"]["Idempotency-Key"] != second["headers"]["Idempotency-Key"]
    assert first["body"]["id"] != second["body"]["id"]
    assert (await sim_state(broadcasts))["side_effects"] == 2

    status, body = await admin.get("/admin/events/once")
    assert body["generation"] == 1 and body["status"] == "delivered"
    assert [(action["generation"], action["current"], action["status"]) for action in body["actions"]] == [
        (0, False, "delivered"),
        (1, True, "delivered"),
    ]
    assert [(replay["mode"], replay["force"]) for replay in body["replays"]] == [
        ("event_ids", False),
        ("event_ids", True),
    ]


async def test_replay_by_time_range_with_filters_and_a_queued_event(
    admin: Admin, settings: Any, redis: aioredis.Redis
) -> None:
    await post(admin, magnews_event("t1", "contacts/delete"), magnews_event("t2", "contacts/update"))
    await run_worker_burst(settings)
    await post(admin, magnews_event("t3", "contacts/delete"))  # still queued

    status, result = await admin.replay(since="10m", type="contacts/delete", source="magnews", dry_run=True)
    assert status == 202
    assert result["mode"] == "time_range" and result["replayed"] == ["t1"] and result["already_queued"] == ["t3"]
    status, result = await admin.replay(since="10m", until="2001-01-01T00:00:00Z")
    assert status == 400 and result["errors"][0]["field"] == "since"
    status, result = await admin.replay(since=0, type="contacts/*")
    assert result["replayed"] == ["t1", "t2"]
    assert sorted(event_id for ids in (await queued_batches(redis)).values() for event_id in ids) == ["t1", "t2", "t3"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "$"),
        ({"dead_letters": True, "event_ids": ["a"]}, "$"),
        ({"event_ids": []}, "event_ids"),
        ({"event_ids": ["has space"]}, "event_ids.0"),
        ({"event_ids": ["a"], "type": "contacts/*"}, "$"),
        ({"dead_letters": True, "force": "yes"}, "force"),
        ({"dead_letters": True, "colour": "red"}, "colour"),
        ({"since": True}, "since.str"),
    ],
)
async def test_an_invalid_replay_request_is_a_400(admin: Admin, body: dict[str, Any], field: str) -> None:
    status, problem = await admin.replay(**body)
    assert status == 400
    assert (problem["type"], problem["title"]) == ("about:blank", "Bad Request")  # RFC 9457, section 4.2.1
    assert problem["errors"][0]["field"] == field


async def test_replay_needs_a_json_body(admin: Admin) -> None:
    url = f"{admin.service.url}/admin/replay"
    async with admin.service.session.post(
        url, data=b"{not json", headers=AUTH | {"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
    async with admin.service.session.post(url, data=b"dead_letters=true", headers=AUTH) as r:
        assert r.status == 415


@pytest.mark.slow
async def test_the_store_stays_bounded(
    admin: Admin, make_settings: SettingsFactory, settings: Any, redis: aioredis.Redis
) -> None:
    await post(admin, magnews_event("keep", "contacts/delete"), magnews_event("bad", "contacts/create", email=None))
    await run_worker_burst(settings)
    retention_ms = settings.retention_seconds * 1000
    record_ms = settings.record_retention_seconds * 1000  # a delivered record's, shorter than the window
    for key in ("mb:event:keep", "mb:actions:keep"):
        assert record_ms - 60_000 < await redis.pttl(key) <= record_ms, key
    assert await redis.pttl("mb:event:bad") == -1, "a dead letter is kept until replayed"
    assert await redis.queued_jobs() == []
    ledger = await redis.keys("mb:ledger:*")
    assert ledger and all(0 < ttl <= retention_ms for ttl in [await redis.pttl(key) for key in ledger])

    # An index entry older than the retention window goes with the next ingest.
    await redis.zadd("mb:events", {"ancient": 1})
    await post(admin, magnews_event("new", "contacts/update"))
    assert await redis.zscore("mb:events", "ancient") is None
    assert await redis.zscore("mb:events", "keep") is not None

    # A short retention, for real: the event and its dedupe marker are gone after it.
    store = EventWriter(redis, retention_seconds=1, batch_size=100)
    from bridge.events import magnify_envelope

    envelope = magnify_envelope(magnify_metric("magnify_send_email_processed"))
    assert await store.ingest([envelope]) == [True]
    await asyncio.sleep(1.1)
    assert await redis.exists(f"mb:event:{envelope.id}") == 0
    assert await store.ingest([envelope]) == [True], "past retention, the same id is new again"
    assert await redis.zscore("mb:events", "keep") is None, "index entries past retention are trimmed"


@pytest.mark.usefixtures("restore_logging")
def test_replay_from_the_shell(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> None:
        client = open_redis(redis_server.url)
        await client.flushall()
        from bridge.events import parse_magnews_body

        envelopes = parse_magnews_body(
            [magnews_event("c1", "contacts/delete"), magnews_event("c2", "contacts/update")],
            received_at="2025-11-14T13:00:00Z",
            max_events=10,
        )
        await ingest(client, envelopes)
        await drop_jobs(client)  # as if the jobs were lost
        await mark_dead(client, "c1", "boom")
        await client.aclose()

    asyncio.run(seed())
    monkeypatch.setenv("MAGBRIDGE_REDIS_URL", redis_server.url)
    monkeypatch.chdir(redis_server.workdir)  # no .env from the working tree

    assert main(["replay", "--dead-letters", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: would replay 1 event" in out and "c1" in out and "c2" not in out

    assert main(["replay", "c1", "c2", "c3", "--json"]) == 1  # c3 does not exist
    result = json.loads(capsys.readouterr().out)
    assert result["replayed"] == ["c1", "c2"] and result["not_found"] == ["c3"]

    assert main(["replay", "--since", "1h", "--type", "contacts/*", "--force"]) == 0
    out = capsys.readouterr().out
    assert "already queued: c1, c2" in out

    assert main(["replay", "--dead-letters", "c1"]) == 2
    assert "choose exactly one selection" in capsys.readouterr().err

    async def history() -> list[dict[str, Any]]:
        client = aioredis.Redis.from_url(redis_server.url)
        event = await EventReader(client).get("c1")
        await client.aclose()
        assert event is not None
        return event.replays

    [replay] = asyncio.run(history())
    assert replay["by"] == "cli" and replay["mode"] == "event_ids" and replay["reset_actions"] == 0
