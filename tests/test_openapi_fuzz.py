"""Schemathesis against the running service's own ``/openapi.json``: every documented operation fuzzed.

The document is fetched from the real service (not built in-process), loaded with
``schemathesis.openapi.from_dict``, and each operation's Hypothesis strategy is run in a worker thread
(``case.call`` is synchronous) against the service on the test's loop. Positive cases (valid by the
document) and negative ones (invalid by it) are both sent, with the admin bearer token and without:

- no response is a 5xx (``not_a_server_error``);
- every status, content type and response body is the one the document declares for the operation;
- data the document calls invalid is refused with a 4xx (``negative_data_rejection``);
- without the token every admin operation answers 401 (``ignored_auth``).

``pytest tests/test_openapi_fuzz.py -s`` prints how many cases were sent and the statuses they got.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from bridge.web.openapi import build_openapi
from tests.support.events import magnews_event
from tests.support.service import SettingsFactory
from tests.support.workers import run_worker_burst

TOKEN = "openapi-fuzz-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_OPERATION = 25
_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Fields the receiver takes as null (a missing value written that way).
_NULLABLE_EVENT_FIELDS = ("id", "timestamp")


def _event_properties(document: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = document["components"]["schemas"]["WebhookEvent"]["properties"]
    return properties


def _status_parameter(document: dict[str, Any]) -> dict[str, Any]:
    [status] = [p for p in document["paths"]["/admin/events"]["get"]["parameters"] if p["name"] == "status"]
    return status


def test_document_allows_null_where_the_receiver_does() -> None:
    properties = _event_properties(build_openapi())
    assert all("null" in properties[name]["type"] for name in _NULLABLE_EVENT_FIELDS)


async def test_empty_status_filter_is_documented_or_refused(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(admin_token=TOKEN))
    async with service.session.get(f"{service.url}/admin/events?status=", headers=AUTH) as response:
        refused = response.status == 400
    assert refused or "" in _status_parameter(build_openapi())["schema"].get("enum", [])


@pytest.mark.parametrize("query", ["since=%C2%B3", "until=%C2%B3", "limit=%C2%B3"])
async def test_unicode_digits_in_admin_parameters_are_a_400(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis, query: str
) -> None:
    service = await start_service(make_settings(admin_token=TOKEN))
    async with service.session.get(f"{service.url}/admin/events?{query}", headers=AUTH) as response:
        assert response.status == 400


@pytest.mark.slow
async def test_every_operation_of_the_document_survives_generated_requests(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    settings = make_settings(admin_token=TOKEN, ready_requires_worker=False)
    service = await start_service(settings)
    # Something to list, show, and replay: delivered events and one dead letter.
    for index, topic in enumerate(["contacts/delete", "contacts/update", "communications/msg/bounce"]):
        async with service.post_webhook(magnews_event(f"oa-{index}", topic)) as response:
            assert response.status == 200
    dead = magnews_event("oa-dead", "contacts/create")
    del dead["data"]["email"]
    async with service.post_webhook(dead) as response:
        assert response.status == 200
    await run_worker_burst(settings)

    async with service.session.get(f"{service.url}/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    schema = schemathesis.openapi.from_dict(document)
    # The token is this test's to give or withhold (both runs below). Schemathesis' own security
    # headers would be overwritten by it, turning "no token" negative cases into false alarms; and
    # extra query parameters whose value is empty are dropped by requests before they are sent.
    # (Unknown parameters are refused by the admin API: tests/test_admin.py.)
    schema.config.generation.with_security_parameters = False
    schema.config.generation.allow_extra_parameters = False
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.label for operation in operations} >= {
        "POST /webhooks/magnews",
        "GET /admin/events",
        "GET /admin/events/{event_id}",
        "GET /admin/dead-letters",
        "POST /admin/replay",
    }
    statuses: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    no_invalid_data: list[str] = []

    def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str], checks: list[Any]) -> None:
        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=service.url, headers=headers, timeout=10)
            statuses[(operation.label, response.status_code)] += 1
            case.validate_response(response, checks=checks, headers=headers)

        try:
            run()
        except Unsatisfiable:
            if mode is not GenerationMode.NEGATIVE:
                raise
            no_invalid_data.append(operation.label)  # e.g. one unconstrained string in the path
        except Exception as exc:  # every operation is tried; the failures are reported together
            failures.append(f"{operation.label} ({mode.value}, {'token' if headers else 'no token'}): {exc}")

    def fuzz_all() -> None:
        for operation in operations:
            admin = operation.path.startswith("/admin/")
            headers = AUTH if admin else {}
            fuzz(operation, GenerationMode.POSITIVE, headers, _CHECKS + ([ignored_auth] if admin else []))
            fuzz(operation, GenerationMode.NEGATIVE, headers, [*_CHECKS, negative_data_rejection])
            if admin:  # no token at all: every admin operation must refuse
                fuzz(operation, GenerationMode.POSITIVE, {}, _CHECKS)

    await asyncio.to_thread(fuzz_all)

    by_class = Counter(f"{status // 100}xx" for (_, status), count in statuses.items() for _ in range(count))
    print(
        f"\nschemathesis: {len(operations)} operations, {sum(statuses.values())} requests; "
        f"classes {dict(sorted(by_class.items()))}"
    )
    for (label, status), count in sorted(statuses.items()):
        print(f"  {label:<32} {status}: {count}")
    print(f"  no schema-invalid request possible for: {', '.join(no_invalid_data) or 'none'}")
    assert not failures, "\n\n".join(failures)
    assert by_class.get("5xx", 0) == 0
    unauthenticated = [count for (label, status), count in statuses.items() if "/admin/" in label and status == 401]
    assert sum(unauthenticated) > 0, "the admin operations were tried without the token"
    assert statuses[("GET /admin/events", 200)] > 0, "the authenticated admin calls got through"
