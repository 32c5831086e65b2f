"""``X-Request-ID``: taken when sane, made otherwise, echoed on every response and on the request's log lines."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.logs import configure_logging
from bridge.web.request_id import request_id
from tests.support.events import magnews_event
from tests.support.service import Service, SettingsFactory

MADE = re.compile(r"[0-9a-f]{32}")


def test_a_sane_id_is_kept_and_anything_else_replaced() -> None:
    for sane in ("abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "Root=1-5759e988-bd862e3fe1be46a994272793", "a" * 128):
        assert request_id(sane) == sane
    for insane in (None, "", "a" * 129, "has space", "new\nline", '"quoted"', "-leading-dash", "é", "a;b"):
        made = request_id(insane)
        assert MADE.fullmatch(made) and made != insane
    assert request_id(None) != request_id(None)


async def test_every_response_carries_the_id_and_the_logs_have_it(
    start_service: Any,
    make_settings: SettingsFactory,
    redis: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    configure_logging("info", "json")  # after capsys took stdout
    service: Service = await start_service(make_settings(log_level="info", admin_token="request-id-admin"))
    given = {"X-Request-ID": "req-7f3a"}
    async with service.post_webhook(magnews_event("rid-1", "contacts/delete"), headers=given) as response:
        assert (response.status, response.headers["X-Request-ID"]) == (200, "req-7f3a")
    async with service.session.post(
        f"{service.url}/webhooks/magnews", data=b"{", headers={"Content-Type": "application/json", **given}
    ) as response:
        assert response.status == 400 and response.content_type == "application/problem+json"
        assert response.headers["X-Request-ID"] == "req-7f3a", "problem documents carry it too"
    hostile = {"X-Request-ID": "x" * 200}
    async with service.session.get(f"{service.url}/admin/events/none", headers=hostile) as response:
        assert response.status == 401
        made = response.headers["X-Request-ID"]
        assert MADE.fullmatch(made)
    seen = set()
    for _ in range(3):
        async with service.session.get(f"{service.url}/nowhere") as response:
            assert response.status == 404
            seen.add(response.headers["X-Request-ID"])
    assert len(seen) == 3, "one new id per request"

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [received] = [line for line in lines if line["event"] == "event received"]
    assert (received["request_id"], received["event_id"]) == ("req-7f3a", "rid-1")
    rejected = [line for line in lines if line["event"] == "request rejected"]
    assert [line["request_id"] for line in rejected] == ["req-7f3a", made]
    assert all("x" * 129 not in json.dumps(line) for line in lines), "an insane id never reaches the logs"
