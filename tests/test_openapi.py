"""``/openapi.json`` against the app: every route documented, every request and response valid."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import redis.asyncio as aioredis
import schemathesis

from bridge.web.app import create_app
from bridge.web.openapi import build_openapi
from bridge.web.problems import status_title
from tests.support.events import magnews_event
from tests.support.service import Service, SettingsFactory
from tests.support.workers import run_worker_burst, running_worker

TOKEN = "openapi-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _validate(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    # References are "#/components/...": resolve them against a root that carries the components.
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(instance)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_route_of_the_app_is_documented_and_nothing_else(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())
    routes = {(route.method, route.resource.canonical) for route in app.router.routes() if route.method != "HEAD"}
    # The operator console's HTML pages are for a browser, not part of the API (docs/console.md).
    routes = {(method, path) for method, path in routes if not path.startswith("/console/")}
    document = build_openapi()
    documented = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    assert routes == documented
    assert document["openapi"] == "3.1.0"
    for ref in _refs(document):
        _, _, kind, name = ref.split("/")
        assert name in document["components"][kind], ref
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [operation for operations in document["paths"].values() for operation in operations.values()]


def test_the_document_is_valid_openapi_with_operation_ids_servers_and_headers() -> None:
    document = build_openapi("https://bridge.example.com/")
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 schema, as the fuzz test loads it
    operations = _operations(document)
    ids = [operation["operationId"] for operation in operations]
    assert len(set(ids)) == len(ids) == len(operations), "one unique operationId each"
    assert [server["url"] for server in document["servers"]] == ["https://bridge.example.com", "/"]
    assert [server["url"] for server in build_openapi()["servers"]] == ["/"]
    hook = document["paths"]["/webhooks/magnews"]["post"]
    assert {(p["in"], p["name"]) for p in hook["parameters"] if "name" in p} == {
        ("query", "token"),
        ("header", "X-Webhook-Token"),
    }
    for operation in operations:
        assert {"$ref": "#/components/parameters/RequestId"} in operation["parameters"], operation["operationId"]
        for response in operation["responses"].values():
            assert response["headers"] == {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}


def test_every_problem_response_states_its_rfc_9457_title() -> None:
    document = build_openapi()
    problems = [
        (int(status), response["content"]["application/problem+json"]["schema"])
        for operation in _operations(document)
        for status, response in operation["responses"].items()
        if "application/problem+json" in response["content"]  # all >= 400 but /readyz's 503 (its checks)
    ]
    assert {status for status, _ in problems} == {400, 401, 403, 404, 405, 408, 413, 415, 503}
    for status, schema in problems:
        stated = schema["allOf"][1]["properties"]
        assert stated == {"status": {"const": status}, "title": {"const": status_title(status)}}
        problem = {"type": "about:blank", "title": status_title(status), "status": status, "detail": "", "instance": ""}
        _validate(document, schema, problem)
        try:
            _validate(document, schema, {**problem, "title": "Invalid JSON"})
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"{status}: a title other than the status phrase passed")
    assert status_title(413) == "Content Too Large" and status_title(418) == "I'm a Teapot"


class Checker:
    """Sends requests, and checks each request body and response against the document."""

    def __init__(self, service: Service, document: dict[str, Any]):
        self.service = service
        self.document = document
        self.seen: set[tuple[str, str, int]] = set()

    async def call(self, method: str, template: str, path: str, expect: int, *, body: Any = None, **kwargs: Any) -> Any:
        # A 405 is documented on the operation that exists (the only one of its path).
        [only] = self.document["paths"][template] if expect == 405 else [method.lower()]
        operation = self.document["paths"][template][only]
        if body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            _validate(self.document, schema, body)
            kwargs["json"] = body
        url = self.service.url + path
        async with self.service.session.request(method, url, **kwargs) as response:
            text = await response.text()
            status, media = response.status, response.content_type
            request_id = response.headers.get("X-Request-ID", "")
        header_schema = self.document["components"]["headers"]["RequestId"]["schema"]
        _validate(self.document, header_schema, request_id)
        assert status == expect, (method, path, status, text)
        documented = operation["responses"][str(status)]["content"]
        assert media in documented, (method, path, status, media)
        payload = json.loads(text) if media.endswith("json") else text
        _validate(self.document, documented[media]["schema"], payload)
        self.seen.add((only.upper(), template, status))
        return payload


async def test_responses_and_requests_match_the_document(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    settings = make_settings(admin_token=TOKEN, ready_requires_worker=True)  # for /readyz's 503
    service = await start_service(settings)
    async with service.session.get(f"{service.url}/openapi.json") as response:
        document = await response.json()
    assert document == build_openapi()
    check = Checker(service, document)
    hook, admin = "/webhooks/magnews", {"headers": AUTH}

    event, dead = magnews_event("o1", "contacts/delete"), magnews_event("o2", "contacts/create", email="nobody")
    await check.call("POST", hook, hook, 200, body=[event, dead])
    await check.call("POST", hook, hook, 400, data=b"[", headers={"Content-Type": "application/json"})
    await check.call("POST", hook, hook, 415, data=b"{}", headers={"Content-Type": "text/plain"})
    await check.call("GET", hook, hook, 405)
    await check.call("GET", "/healthz", "/healthz", 200)
    await check.call("GET", "/readyz", "/readyz", 503)  # no worker yet
    await run_worker_burst(settings)
    async with running_worker(settings, redis):  # the queue is empty: no job to cut short on leaving
        await check.call("GET", "/readyz", "/readyz", 200)
    await check.call("GET", "/metrics", "/metrics", 200)
    await check.call("GET", "/openapi.json", "/openapi.json", 200)

    replay = "/admin/replay"
    await check.call("POST", replay, replay, 202, body={"event_ids": ["o1", "zz"], "force": True}, **admin)
    await check.call("POST", replay, replay, 202, body={"dead_letters": True, "dry_run": True}, **admin)
    await check.call("POST", replay, replay, 202, body={"since": "1h", "type": "contacts/*", "dry_run": True}, **admin)
    await check.call("POST", replay, replay, 400, body={"dead_letters": False}, **admin)
    await check.call("POST", replay, replay, 415, data=b"x", **admin)
    await run_worker_burst(settings)

    events, one = "/admin/events", "/admin/events/{event_id}"
    page = await check.call("GET", events, events, 200, params={"limit": "1"}, **admin)
    assert page["next_cursor"] is not None
    await check.call("GET", events, events, 200, params={"cursor": page["next_cursor"]}, **admin)
    await check.call("GET", events, events, 400, params={"status": "x"}, **admin)
    await check.call("GET", events, events, 401)
    detail = await check.call("GET", one, "/admin/events/o1", 200, **admin)
    assert len(detail["actions"]) == 2 and len(detail["replays"]) == 1
    await check.call("GET", one, "/admin/events/o2", 200, **admin)
    await check.call("GET", one, "/admin/events/none", 404, **admin)
    letters = await check.call("GET", "/admin/dead-letters", "/admin/dead-letters", 200, **admin)
    assert [letter["id"] for letter in letters["dead_letters"]] == ["o2"]
    await check.call("GET", "/admin/dead-letters", "/admin/dead-letters", 400, params={"limit": "x"}, **admin)

    off = Checker(await start_service(make_settings()), document)
    await off.call("GET", "/admin/dead-letters", "/admin/dead-letters", 503, **admin)

    documented = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    assert {(method, path) for method, path, _ in check.seen} == documented, "every route was exercised"
