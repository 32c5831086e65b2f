"""The vendor simulators over real sockets: auth, validation, idempotency, paging, webhooks and faults."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.simulators import SIM_CORE, Simulators, create_magnify_app, run_simulators
from bridge.simulators.magnify import MAGNIFY_BACKEND

MAGICBELL_AUTH = {"Authorization": "Bearer sim-magicbell-token"}
MAGNEWS_AUTH = {"Authorization": "Bearer sim-magnews-token"}
TOKEN_FORM = {
    "grant_type": "client_credentials",
    "client_id": "sim-client",
    "client_secret": "sim-secret",
    "scope": "partner-api/motions.read",
}
MOTION_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


@pytest.fixture
async def sims() -> AsyncIterator[Simulators]:
    async with run_simulators() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Receiver:
    """A webhook endpoint on a real socket that answers ``status`` and keeps what it got."""

    url: str = ""
    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def handle(request: web.Request) -> web.Response:
        state.received.append(await request.json())
        return web.Response(status=state.status)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield state
    finally:
        await runner.cleanup()


def broadcast(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"title": "Hello", "recipients": [{"email": "ada@example.com"}]}
    return body | overrides


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    """``(status, JSON body or text, headers)``."""
    async with http.request(method, url, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body, dict(response.headers)


async def magnify_token(http: aiohttp.ClientSession, token_url: str) -> dict[str, str]:
    status, body, _ = await call(http, "POST", token_url, data=TOKEN_FORM)
    assert status == 200, body
    return {"Authorization": f"Bearer {body['access_token']}"}


async def sim_state(http: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    status, body, _ = await call(http, "GET", f"{base_url}/_sim/state")
    assert status == 200
    state: dict[str, Any] = body
    return state


async def set_faults(http: aiohttp.ClientSession, base_url: str, **faults: Any) -> None:
    status, body, _ = await call(http, "POST", f"{base_url}/_sim/faults", json=faults)
    assert status == 200, body


# --- auth -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
async def test_magicbell_refuses_missing_or_wrong_token(
    sims: Simulators, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    url = f"{sims.endpoints.magicbell_base_url}/broadcasts"
    status, body, _ = await call(http, "POST", url, json=broadcast(), headers=headers)
    assert status == 401
    assert body["errors"][0]["code"] == "unauthorized"
    assert (await sim_state(http, sims.endpoints.magicbell_base_url))["side_effects"] == 0


async def test_magnews_refuses_wrong_token_in_vendor_format(sims: Simulators, http: aiohttp.ClientSession) -> None:
    url = f"{sims.endpoints.magnews_base_url}/v19/account/userinfo"
    status, body, _ = await call(http, "GET", url, headers={"Authorization": "Bearer wrong"})
    assert status == 401
    assert set(body) == {"error", "debugMessage"}


async def test_magnify_refuses_unknown_token_in_documented_format(
    sims: Simulators, http: aiohttp.ClientSession
) -> None:
    url = f"{sims.endpoints.magnify_base_url}/motions"
    status, body, _ = await call(http, "GET", url, headers={"Authorization": "Bearer made-up"})
    assert status == 401
    assert body == {
        "type": "/errors/motions",
        "message": "Unauthorized",
        "detail": "Invalid or missing OAuth 2.0 token",
        "status": 401,
        "instance": "/v1/partner/motions",
    }


# --- MagicBell ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (broadcast(title="x" * 256), "title"),
        (broadcast(recipients=[{"email": f"u{n}@example.com"} for n in range(1001)]), "recipients"),
        (broadcast(category="bad category!"), "category"),
        (broadcast(topic="a" * 256), "topic"),
        (broadcast(id="not-a-uuid"), "id"),
        (broadcast(recipients=[{"first_name": "Ada"}]), "recipients[0]"),
        (broadcast(recipients=[{"email": "no-at-sign"}]), "recipients[0].email"),
    ],
)
async def test_magicbell_validation_names_the_field(
    sims: Simulators, http: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    base = sims.endpoints.magicbell_base_url
    status, answer, _ = await call(http, "POST", f"{base}/broadcasts", json=body, headers=MAGICBELL_AUTH)
    assert status == 422
    assert [error["message"].split(":")[0] for error in answer["errors"]] == [field]
    assert (await sim_state(http, base))["broadcasts"] == 0


async def test_magicbell_reports_every_problem(sims: Simulators, http: aiohttp.ClientSession) -> None:
    body = {"recipients": [], "action_url": "x" * 2049}
    url = f"{sims.endpoints.magicbell_base_url}/broadcasts"
    status, answer, _ = await call(http, "POST", url, json=body, headers=MAGICBELL_AUTH)
    assert status == 422
    assert [error["message"] for error in answer["errors"]] == [
        "title: is required",
        "recipients: must contain between 1 and 1000 items",
        "action_url: length must be at most 2048",
    ]


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]"])
async def test_magicbell_rejects_non_object_body(sims: Simulators, http: aiohttp.ClientSession, raw: bytes) -> None:
    url = f"{sims.endpoints.magicbell_base_url}/broadcasts"
    headers = MAGICBELL_AUTH | {"Content-Type": "application/json"}
    status, answer, _ = await call(http, "POST", url, data=raw, headers=headers)
    assert status == 400
    assert answer["errors"][0]["code"] == "bad_request"


async def test_magicbell_creates_and_fetches_broadcast(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magicbell_base_url
    recipients = [{"email": "ada@example.com"}, {"external_id": "user_7"}]
    status, created, _ = await call(
        http, "POST", f"{base}/broadcasts", json=broadcast(recipients=recipients), headers=MAGICBELL_AUTH
    )
    assert status == 201
    assert uuid.UUID(created["id"]).version == 4
    assert created["status"] == {"status": "enqueued", "summary": {"total": 2, "failures": 0}, "errors": []}
    assert created["created_at"].endswith("Z")
    status, fetched, _ = await call(http, "GET", f"{base}/broadcasts/{created['id']}", headers=MAGICBELL_AUTH)
    # Fetched later, the broadcast has been processed (tests/test_vendor_magicbell.py: failed recipients).
    processed = {"status": "processed", "summary": {"total": 2, "failures": 0}, "errors": []}
    assert (status, fetched) == (200, created | {"status": processed})
    status, missing, _ = await call(http, "GET", f"{base}/broadcasts/{uuid.uuid4()}", headers=MAGICBELL_AUTH)
    assert status == 404
    assert missing["errors"][0]["code"] == "not_found"


async def test_magicbell_idempotent_replay_has_one_side_effect(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magicbell_base_url
    headers = MAGICBELL_AUTH | {"Idempotency-Key": "key-1"}
    first = await call(http, "POST", f"{base}/broadcasts", json=broadcast(), headers=headers)
    second = await call(http, "POST", f"{base}/broadcasts", json=broadcast(), headers=headers)
    assert first[0] == second[0] == 201
    assert second[1] == first[1]
    assert second[2].get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first[2]
    status, answer, _ = await call(http, "POST", f"{base}/broadcasts", json=broadcast(title="Other"), headers=headers)
    assert status == 422
    assert "different request body" in answer["errors"][0]["message"]
    assert await sim_state(http, base) == {"broadcasts": 1, "side_effects": 1}


async def test_magicbell_concurrent_retries_have_one_side_effect(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magicbell_base_url
    await set_faults(http, base, latency_ms=50)
    headers = MAGICBELL_AUTH | {"Idempotency-Key": "key-2"}
    results = await asyncio.gather(
        *(call(http, "POST", f"{base}/broadcasts", json=broadcast(), headers=headers) for _ in range(3))
    )
    assert {result[1]["id"] for result in results} == {results[0][1]["id"]}
    assert (await sim_state(http, base))["side_effects"] == 1


async def test_magicbell_failed_attempt_is_not_replayed(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magicbell_base_url
    await set_faults(http, base, fail_next=[500])
    headers = MAGICBELL_AUTH | {"Idempotency-Key": "key-3"}
    failed = await call(http, "POST", f"{base}/broadcasts", json=broadcast(), headers=headers)
    retried = await call(http, "POST", f"{base}/broadcasts", json=broadcast(), headers=headers)
    assert (failed[0], retried[0]) == (500, 201)
    assert "Idempotent-Replayed" not in retried[2]
    assert (await sim_state(http, base))["side_effects"] == 1


async def test_magicbell_duplicate_id_conflicts(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magicbell_base_url
    broadcast_id = str(uuid.uuid4())
    body = broadcast(id=broadcast_id)
    assert (await call(http, "POST", f"{base}/broadcasts", json=body, headers=MAGICBELL_AUTH))[0] == 201
    status, answer, _ = await call(http, "POST", f"{base}/broadcasts", json=body, headers=MAGICBELL_AUTH)
    assert status == 409
    assert answer == {"errors": [{"code": "conflict", "message": f"broadcast {broadcast_id} already exists"}]}
    assert (await sim_state(http, base))["side_effects"] == 1


async def test_magicbell_list_pages_with_cursor_links(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magicbell_base_url
    created = []
    for number in range(5):
        _, body, _ = await call(
            http, "POST", f"{base}/broadcasts", json=broadcast(title=f"b{number}"), headers=MAGICBELL_AUTH
        )
        created.append(body["id"])
    seen: list[str] = []
    url: str | None = f"{base}/broadcasts?limit=2"
    pages = []
    while url is not None:
        status, page, _ = await call(http, "GET", url, headers=MAGICBELL_AUTH)
        assert status == 200
        pages.append(page)
        seen += [item["id"] for item in page["data"]]
        url = page["links"]["next"]
    assert seen == created[::-1]  # newest first
    assert [len(page["data"]) for page in pages] == [2, 2, 1]
    assert pages[0]["links"]["prev"] is None
    assert pages[-1]["links"]["next"] is None
    status, back, _ = await call(http, "GET", pages[-1]["links"]["prev"], headers=MAGICBELL_AUTH)
    assert [item["id"] for item in back["data"]] == seen[2:4]
    status, answer, _ = await call(http, "GET", f"{base}/broadcasts?limit=101", headers=MAGICBELL_AUTH)
    assert status == 422
    assert answer["errors"][0]["message"].startswith("limit:")


# --- Magnews contacts -----------------------------------------------------------------------------------


async def merge(http: aiohttp.ClientSession, base: str, values: dict[str, Any], iddatabase: int = 7) -> Any:
    body = {"values": values, "options": {"iddatabase": iddatabase}}
    status, answer, _ = await call(http, "POST", f"{base}/v19/contacts/merge", json=body, headers=MAGNEWS_AUTH)
    assert status == 200, answer
    return answer


async def test_magnews_merge_inserts_updates_and_does_nothing(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magnews_base_url
    inserted = await merge(http, base, {"magnify_user_id": "user_1", "name": "Ada", "score": 42})
    updated = await merge(http, base, {"magnify_user_id": "user_1", "name": "Ada L."})
    unchanged = await merge(http, base, {"magnify_user_id": "user_1", "name": "Ada L."})
    assert [inserted["action"], updated["action"], unchanged["action"]] == ["insert", "update", "nothing"]
    assert inserted == {
        "ok": True,
        "pk": "user_1",
        "idcontact": inserted["idcontact"],
        "action": "insert",
        "errors": None,
        "sendemail": None,
        "enterworkflow": None,
        "idwebtracking": None,
    }
    assert updated["idcontact"] == unchanged["idcontact"] == inserted["idcontact"]
    status, contact, _ = await call(
        http, "GET", f"{base}/v19/contacts/contact/{inserted['idcontact']}", headers=MAGNEWS_AUTH
    )
    assert status == 200
    assert contact == {
        "idcontact": inserted["idcontact"],
        "iddatabase": 7,
        "status": "subscribed",
        "fields": {"magnify_user_id": "user_1", "name": "Ada L.", "score": "42"},
    }
    assert await sim_state(http, base) == {"contacts": 1, "merges_accepted": 3, "side_effects": 2, "webhooks": 0}


@pytest.mark.parametrize(
    ("values", "iddatabase", "error"),
    [
        ({"name": "no key"}, 7, {"type": "missing_primary_key", "field": "magnify_user_id"}),
        ({"email": ""}, 1, {"type": "missing_primary_key", "field": "email"}),
        ({"email": "a@example.com"}, 99, {"type": "database_not_found", "field": "iddatabase"}),
        ({"email": "a@example.com", "status": "gone"}, 1, {"type": "invalid_value", "field": "status"}),
    ],
)
async def test_magnews_merge_data_errors_are_ok_false(
    sims: Simulators, http: aiohttp.ClientSession, values: dict[str, Any], iddatabase: int, error: dict[str, str]
) -> None:
    base = sims.endpoints.magnews_base_url
    answer = await merge(http, base, values, iddatabase)
    assert answer["ok"] is False
    assert answer["errors"] == [error]
    assert (await sim_state(http, base))["contacts"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"values": {"email": "a@example.com"}, "options": {}}, "options.iddatabase"),
        ({"values": {"email": "a@example.com"}, "options": {"iddatabase": "1"}}, "options.iddatabase"),
        ({"values": ["email"], "options": {"iddatabase": 1}}, "values"),
    ],
)
async def test_magnews_malformed_merge_is_400(
    sims: Simulators, http: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    url = f"{sims.endpoints.magnews_base_url}/v19/contacts/merge"
    status, answer, _ = await call(http, "POST", url, json=body, headers=MAGNEWS_AUTH)
    assert status == 400
    assert field in answer["error"] and field in answer["debugMessage"]


async def test_magnews_batchmerge_maps_results_in_order(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magnews_base_url

    def contact(**values: Any) -> dict[str, Any]:
        return {"values": [{"field": name, "value": value} for name, value in values.items()]}

    body = {
        "iddatabase": 1,
        "contacts": [
            contact(email="one@example.com", name="One"),
            contact(name="no primary key"),
            contact(email="one@example.com", name="One again"),
            contact(email="two@example.com", status="bogus"),
            contact(email="three@example.com"),
        ],
        "options": {},
    }
    status, results, _ = await call(http, "POST", f"{base}/v19/contacts/batchmerge", json=body, headers=MAGNEWS_AUTH)
    assert status == 200
    assert [(r["ok"], r["action"], r["pk"]) for r in results] == [
        (True, "insert", "one@example.com"),
        (False, "nothing", ""),
        (True, "update", "one@example.com"),
        (False, "nothing", "two@example.com"),
        (True, "insert", "three@example.com"),
    ]
    assert results[1]["errors"] == [{"type": "missing_primary_key", "field": "email"}]
    assert results[3]["errors"] == [{"type": "invalid_value", "field": "status"}]
    assert (await sim_state(http, base))["contacts"] == 2


async def test_magnews_batchmerge_limit(sims: Simulators, http: aiohttp.ClientSession) -> None:
    contacts = [{"values": [{"field": "email", "value": f"u{n}@example.com"}]} for n in range(1001)]
    url = f"{sims.endpoints.magnews_base_url}/v19/contacts/batchmerge"
    status, answer, _ = await call(
        http, "POST", url, json={"iddatabase": 1, "contacts": contacts}, headers=MAGNEWS_AUTH
    )
    assert status == 400
    assert "1000" in answer["debugMessage"]


async def test_magnews_contact_404_userinfo_and_version(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magnews_base_url
    status, missing, _ = await call(http, "GET", f"{base}/v19/contacts/contact/999", headers=MAGNEWS_AUTH)
    assert status == 404
    assert set(missing) == {"error", "debugMessage"}
    status, info, _ = await call(http, "GET", f"{base}/v19/account/userinfo", headers=MAGNEWS_AUTH)
    assert (status, info["accountName"], info["dateTimeFormat"]) == (200, "SunnyWear", "dd/MM/yyyy HH:mm")
    assert (await call(http, "GET", f"{base}/v19", headers=MAGNEWS_AUTH))[:2] == (200, "v19")


# --- Magnews webhooks -----------------------------------------------------------------------------------


async def test_magnews_webhook_lifecycle(sims: Simulators, http: aiohttp.ClientSession, receiver: Receiver) -> None:
    base = sims.endpoints.magnews_base_url
    body = {"uri": receiver.url, "topics": "contacts/update,contacts/delete"}
    status, created, _ = await call(http, "POST", f"{base}/v19/webhooks/create", json=body, headers=MAGNEWS_AUTH)
    assert status == 200
    [test_request] = receiver.received
    assert (test_request["topic"], test_request["test"]) == ("webhooks/test", True)
    assert test_request["timestamp"].endswith("Z")
    assert created["topics"] == "contacts/delete,contacts/update"
    assert (created["status"], created["uri"], created["lastExecDate"], created["backoffDate"]) == (
        "active",
        receiver.url,
        "",
        "",
    )
    assert time.strptime(created["creationDate"], "%d/%m/%Y %H:%M")
    webhook_url = f"{base}/v19/webhooks/{created['id']}"
    assert (await call(http, "GET", webhook_url, headers=MAGNEWS_AUTH))[1] == created
    update = {"id": created["id"], "status": "suspended"}
    status, updated, _ = await call(http, "POST", f"{base}/v19/webhooks/update", json=update, headers=MAGNEWS_AUTH)
    assert (status, updated["status"]) == (200, "suspended")
    status, listed, _ = await call(http, "GET", f"{base}/v19/webhooks/list", headers=MAGNEWS_AUTH)
    assert [webhook["id"] for webhook in listed] == [created["id"]]
    delete_url = f"{base}/v19/webhooks/delete/{created['id']}"
    assert (await call(http, "DELETE", delete_url, headers=MAGNEWS_AUTH))[0] == 204
    assert (await call(http, "GET", webhook_url, headers=MAGNEWS_AUTH))[0] == 404


async def test_magnews_webhook_create_fails_when_test_request_fails(
    sims: Simulators, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.status = 400
    base = sims.endpoints.magnews_base_url
    body = {"uri": receiver.url, "topics": "contacts/update"}
    status, answer, _ = await call(http, "POST", f"{base}/v19/webhooks/create", json=body, headers=MAGNEWS_AUTH)
    assert status == 400
    assert answer == {"error": "test request failed", "debugMessage": "HTTP 400 test request failed"}
    assert len(receiver.received) == 1
    assert (await sim_state(http, base))["webhooks"] == 0


async def test_magnews_webhook_create_fails_when_endpoint_is_unreachable(
    sims: Simulators, http: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    body = {"uri": f"http://127.0.0.1:{port}/hook", "topics": "contacts/update"}
    url = f"{sims.endpoints.magnews_base_url}/v19/webhooks/create"
    status, answer, _ = await call(http, "POST", url, json=body, headers=MAGNEWS_AUTH)
    assert status == 400
    assert answer["error"] == "test request failed"
    assert "Cannot connect" in answer["debugMessage"]


async def test_magnews_emit_reaches_active_subscribers(
    sims: Simulators, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    base = sims.endpoints.magnews_base_url
    body = {"uri": receiver.url, "topics": "contacts/update"}
    _, created, _ = await call(http, "POST", f"{base}/v19/webhooks/create", json=body, headers=MAGNEWS_AUTH)
    event = {"id": "evt-1", "topic": "contacts/update", "data": {"idcontact": 5}}
    status, result, _ = await call(http, "POST", f"{base}/_sim/emit", json=event)
    assert status == 200
    assert result["delivered"] == [{"webhook": created["id"], "status": 200}]
    delivered = receiver.received[-1]
    assert {key: delivered[key] for key in ("id", "topic", "data")} == event
    assert delivered["timestamp"].endswith("Z")
    other_topic = await call(http, "POST", f"{base}/_sim/emit", json={"topic": "contacts/delete", "data": {}})
    assert other_topic[1]["delivered"] == []
    suspend = {"id": created["id"], "status": "suspended"}
    await call(http, "POST", f"{base}/v19/webhooks/update", json=suspend, headers=MAGNEWS_AUTH)
    suspended = await call(http, "POST", f"{base}/_sim/emit", json=event)
    assert suspended[1]["delivered"] == []
    assert len(receiver.received) == 2  # the test request and one event


async def test_magnews_can_require_https(http: aiohttp.ClientSession, receiver: Receiver) -> None:
    async with run_simulators(magnews={"require_https": True}) as running:
        body = {"uri": receiver.url, "topics": "contacts/update"}
        url = f"{running.endpoints.magnews_base_url}/v19/webhooks/create"
        status, answer, _ = await call(http, "POST", url, json=body, headers=MAGNEWS_AUTH)
    assert status == 400
    assert "uri" in answer["error"]
    assert receiver.received == []


# --- Magnify --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"scope": "partner-api/motions.write"}, 400, "invalid_scope"),
        ({"scope": ""}, 400, "invalid_scope"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
async def test_magnify_token_errors(
    sims: Simulators, http: aiohttp.ClientSession, changes: dict[str, str], status: int, error: str
) -> None:
    answer = await call(http, "POST", sims.endpoints.magnify_token_url, data=TOKEN_FORM | changes)
    assert (answer[0], answer[1]["error"]) == (status, error)
    assert answer[1]["error_description"]
    assert (await sim_state(http, sims.endpoints.magnify_base_url.removesuffix("/v1/partner")))["tokens_issued"] == 0


async def test_magnify_token_flow(sims: Simulators, http: aiohttp.ClientSession) -> None:
    status, token, headers = await call(http, "POST", sims.endpoints.magnify_token_url, data=TOKEN_FORM)
    assert status == 200
    assert (token["token_type"], token["expires_in"]) == ("Bearer", 3600)
    assert headers["Cache-Control"] == "no-store"
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    status, motions, _ = await call(http, "GET", f"{sims.endpoints.magnify_base_url}/motions", headers=auth)
    assert status == 200
    assert motions["total"] == 20 and len(motions["data"]) == 10
    assert all(motion["id"].startswith("motion_") for motion in motions["data"])
    root = sims.endpoints.magnify_base_url.removesuffix("/v1/partner")
    assert (await sim_state(http, root))["tokens_issued"] == 1


async def test_magnify_token_expires(http: aiohttp.ClientSession) -> None:
    async with run_simulators(magnify={"token_ttl_seconds": 0.2}) as running:
        auth = await magnify_token(http, running.endpoints.magnify_token_url)
        url = f"{running.endpoints.magnify_base_url}/motions"
        assert (await call(http, "GET", url, headers=auth))[0] == 200
        await asyncio.sleep(0.3)
        status, body, _ = await call(http, "GET", url, headers=auth)
    assert status == 401
    assert body["detail"] == "OAuth 2.0 token has expired"


async def some_motion(http: aiohttp.ClientSession, base: str, auth: dict[str, str], state: str) -> str:
    """The bare id of a motion in ``state``."""
    status, motions, _ = await call(http, "GET", f"{base}/motions?state={state}&size=1", headers=auth)
    assert status == 200 and motions["data"], motions
    motion_id: str = motions["data"][0]["id"].removeprefix("motion_")
    return motion_id


@pytest.mark.parametrize(
    ("path", "errors"),
    [
        ("/motions?size=0", ["size: should be >= 1"]),
        ("/motions?size=1001&from=101", ["size: should be <= 1000", "from: should be <= 100"]),
        ("/motions?state=RUNNING", ["state: must be equal to one of the allowed values"]),
        ("/motions?size=ten", ["size: should be integer"]),
        ("/motions/{id}/email-metrics?size=0", ["size: should be >= 1"]),
        ("/motions/{id}/email-metrics?size=101", ["size: should be <= 100"]),
        ("/motions/{id}/email-metrics?from=99901", ["from: should be <= 99900"]),
    ],
)
async def test_magnify_paging_limits(
    sims: Simulators, http: aiohttp.ClientSession, path: str, errors: list[str]
) -> None:
    base = sims.endpoints.magnify_base_url
    auth = await magnify_token(http, sims.endpoints.magnify_token_url)
    motion_id = await some_motion(http, base, auth, "EXECUTING")
    status, body, _ = await call(http, "GET", base + path.replace("{id}", motion_id), headers=auth)
    assert status == 400
    assert body["validationErrors"] == errors
    assert (body["type"], body["status"], body["detail"]) == (
        "/errors/motions",
        400,
        "Invalid query parameters provided",
    )


async def test_magnify_prefixed_motion_id_is_400_as_documented(sims: Simulators, http: aiohttp.ClientSession) -> None:
    auth = await magnify_token(http, sims.endpoints.magnify_token_url)
    url = f"{sims.endpoints.magnify_base_url}/motions/motion_123"
    status, body, _ = await call(http, "GET", url, headers=auth)
    assert status == 400
    assert body == {
        "type": "/errors/motions",
        "message": "Failed to fetch motion - validation failed",
        "detail": "Invalid motion ID format",
        "status": 400,
        "instance": "/v1/partner/motions/motion_123",
        "validationErrors": [f'motionId: should match pattern "{MOTION_ID_PATTERN}"'],
    }
    status, body, _ = await call(http, "GET", url + "/email-metrics", headers=auth)
    assert (status, body["message"]) == (400, "Failed to fetch motion email metrics - validation failed")


async def test_magnify_404s(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magnify_base_url
    auth = await magnify_token(http, sims.endpoints.magnify_token_url)
    draft = await some_motion(http, base, auth, "DRAFT")
    status, body, _ = await call(http, "GET", f"{base}/motions/{draft}/email-metrics", headers=auth)
    assert (status, body["status"]) == (404, 404)
    assert "validationErrors" not in body
    unknown = "00000000-0000-0000-0000-000000000000"
    assert (await call(http, "GET", f"{base}/motions/{unknown}", headers=auth))[0] == 404
    assert (await call(http, "GET", f"{base}/motions/{unknown}/email-metrics", headers=auth))[0] == 404


async def all_metrics(http: aiohttp.ClientSession, base: str, auth: dict[str, str], motion_id: str) -> list[Any]:
    metrics: list[Any] = []
    while True:
        url = f"{base}/motions/{motion_id}/email-metrics?from={len(metrics)}&size=7"
        status, page, _ = await call(http, "GET", url, headers=auth)
        assert status == 200
        metrics += page["data"]
        if len(metrics) >= page["total"]:
            return metrics


@pytest.mark.parametrize("order", ["oldest_first", "newest_first"])
async def test_magnify_metrics_order(http: aiohttp.ClientSession, order: str) -> None:
    async with run_simulators(magnify={"order": order}) as running:
        base = running.endpoints.magnify_base_url
        auth = await magnify_token(http, running.endpoints.magnify_token_url)
        motion_id = await some_motion(http, base, auth, "EXECUTING")
        metrics = await all_metrics(http, base, auth, motion_id)
    times = [metric["occurredAt"] for metric in metrics]
    assert len(times) == 50
    assert times == sorted(times, reverse=order == "newest_first")
    assert len(set(times)) == 50
    first = metrics[0]
    assert first["motion"]["id"] == motion_id and isinstance(first["motion"]["version"], str)
    assert first["user"]["id"].startswith("user_") and first["account"]["id"].startswith("acc_")
    assert first["emailEvent"]["type"].startswith("magnify_send_email_")


async def test_magnify_generated_data_is_realistic_and_seeded() -> None:
    data = create_magnify_app(motions=40, seed=3)[MAGNIFY_BACKEND].data
    again = create_magnify_app(motions=40, seed=3)[MAGNIFY_BACKEND].data
    assert [m.to_json() for m in data.motions] == [m.to_json() for m in again.motions]
    states = [motion.state for motion in data.motions]
    assert states.count("EXECUTING") + states.count("COMPLETED") > len(states) / 2
    assert all(not motion.metrics for motion in data.motions if motion.state == "DRAFT")
    kinds = [metric["emailEvent"]["type"] for motion in data.motions for metric in motion.metrics]
    assert kinds.count("magnify_send_email_delivered") > 10 * kinds.count("magnify_send_email_bounce") > 0
    users = {metric["user"]["id"] for metric in data.motions[0].metrics}
    assert 1 < len(users) < len(data.motions[0].metrics)


async def test_magnify_append_adds_newest_metrics(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magnify_base_url
    root = base.removesuffix("/v1/partner")
    auth = await magnify_token(http, sims.endpoints.magnify_token_url)
    motion_id = await some_motion(http, base, auth, "EXECUTING")
    before = await all_metrics(http, base, auth, motion_id)
    status, result, _ = await call(http, "POST", f"{root}/_sim/append", json={"motion_id": motion_id, "count": 3})
    assert (status, result["appended"]) == (200, {motion_id: 3})
    after = await all_metrics(http, base, auth, motion_id)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 3
    assert after[-1]["occurredAt"] >= time.time() * 1000 - 5000
    status, result, _ = await call(http, "POST", f"{root}/_sim/append", json={"count": 4})
    assert sum(result["appended"].values()) == 4
    assert (await sim_state(http, root))["metrics"] == result["metrics"]


async def test_magnify_background_append(http: aiohttp.ClientSession) -> None:
    async with run_simulators(magnify={"append_per_second": 100}) as running:
        root = running.endpoints.magnify_base_url.removesuffix("/v1/partner")
        start = (await sim_state(http, root))["metrics"]
        await asyncio.sleep(0.35)
        grown = (await sim_state(http, root))["metrics"]
    assert grown - start >= 10


# --- faults and control routes --------------------------------------------------------------------------


async def test_rate_limit_next_gives_429_with_retry_after(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magicbell_base_url
    await set_faults(http, base, rate_limit_next=2, retry_after=2)
    results = [await call(http, "GET", f"{base}/broadcasts", headers=MAGICBELL_AUTH) for _ in range(3)]
    assert [result[0] for result in results] == [429, 429, 200]
    assert results[0][2]["Retry-After"] == "2"
    assert results[0][1]["errors"][0]["code"] == "too_many_requests"
    _, records, _ = await call(http, "GET", f"{base}/_sim/requests?path=/broadcasts&method=GET")
    assert [record["status"] for record in records] == [429, 429, 200]
    assert records[0]["headers"]["Authorization"] == "Bearer sim-magicbell-token"


async def test_fail_next_then_normal(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magnews_base_url
    await set_faults(http, base, fail_next=[503, 502])
    statuses = [(await call(http, "GET", f"{base}/v19", headers=MAGNEWS_AUTH))[0] for _ in range(3)]
    assert statuses == [503, 502, 200]


async def test_error_rate_one_fails_every_request_in_vendor_format(
    sims: Simulators, http: aiohttp.ClientSession
) -> None:
    base = sims.endpoints.magnews_base_url
    await set_faults(http, base, error_rate=1)
    for _ in range(3):
        status, body, _ = await call(http, "GET", f"{base}/v19/account/userinfo", headers=MAGNEWS_AUTH)
        assert (status, body["error"]) == (500, "Internal Server Error")


async def test_drop_rate_one_disconnects(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magicbell_base_url
    await set_faults(http, base, drop_rate=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, "POST", f"{base}/broadcasts", json=broadcast(), headers=MAGICBELL_AUTH)
    [record] = sims.magicbell_app[SIM_CORE].records
    assert (record.status, record.body["title"]) == (0, "Hello")
    assert (await sim_state(http, base))["side_effects"] == 0


async def test_latency(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magnews_base_url
    await set_faults(http, base, latency_ms=200)
    started = time.monotonic()
    assert (await call(http, "GET", f"{base}/v19", headers=MAGNEWS_AUTH))[0] == 200
    assert time.monotonic() - started >= 0.2


async def test_max_rps_and_down(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magnews_base_url
    await set_faults(http, base, max_rps=2)
    results = [await call(http, "GET", f"{base}/v19", headers=MAGNEWS_AUTH) for _ in range(3)]
    assert [result[0] for result in results] == [200, 200, 429]
    assert 0 < float(results[2][2]["Retry-After"]) <= 1
    await set_faults(http, base, max_rps=0, down=True)
    assert (await call(http, "GET", f"{base}/v19", headers=MAGNEWS_AUTH))[0] == 503


async def test_faults_are_validated_and_reset_clears_everything(sims: Simulators, http: aiohttp.ClientSession) -> None:
    base = sims.endpoints.magicbell_base_url
    status, body, _ = await call(http, "POST", f"{base}/_sim/faults", json={"error_rate": 2})
    assert (status, body["error"]) == (400, "error_rate: must be a number between 0 and 1")
    status, body, _ = await call(http, "POST", f"{base}/_sim/faults", json={"explode": True})
    assert status == 400
    await call(http, "POST", f"{base}/broadcasts", json=broadcast(), headers=MAGICBELL_AUTH)
    await set_faults(http, base, down=True)
    status, summary, _ = await call(http, "POST", f"{base}/_sim/reset")
    assert (status, summary) == (200, {"broadcasts": 0, "side_effects": 0})
    assert (await call(http, "GET", f"{base}/_sim/requests"))[1] == []
    assert (await call(http, "GET", f"{base}/broadcasts", headers=MAGICBELL_AUTH))[0] == 200


async def test_readings_are_chosen_per_simulator_and_refused_when_unknown() -> None:
    from bridge.simulators.readings import Readings, UnknownReading, parse_reading

    readings = Readings("magnews", {"merge_result": ("table", "examples")})
    assert readings["merge_result"] == "table", "the first answer is the default"
    readings.update({"merge_result": "examples"})
    assert readings.current == {"merge_result": "examples"}
    with pytest.raises(UnknownReading, match="merge_result: must be one of table, examples"):
        readings.update({"merge_result": "guess"})
    with pytest.raises(UnknownReading, match="magnews has no reading 'nope'"):
        readings.update({"nope": "x"})
    assert readings.current == {"merge_result": "examples"}, "a refused change changes nothing"
    assert parse_reading("magicbell.repeated_id=409") == ("magicbell", "repeated_id", "409")
    with pytest.raises(UnknownReading, match=r"expected VENDOR\.QUESTION=ANSWER"):
        parse_reading("magicbell=409")
    with pytest.raises(UnknownReading, match="no simulator 'nobody'"):
        async with run_simulators(readings={"nobody": {"x": "y"}}):
            pass
