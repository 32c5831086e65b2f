"""Logs as an operator reads them: JSON lines with the bound context, one per step, never a secret."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from bridge.logs import configure_logging
from tests.support.events import magnews_event
from tests.support.service import SettingsFactory
from tests.support.workers import run_worker_burst

SECRETS = {
    "webhook_secret": "hook-secret-5f2a9c",
    "admin_token": "admin-token-8d41e7",
    "magnify_client_secret": "magnify-secret-77aa01",
}


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _find(lines: list[dict[str, Any]], event: str, **fields: Any) -> dict[str, Any]:
    matches = [line for line in lines if line["event"] == event and fields.items() <= line.items()]
    assert len(matches) == 1, (event, fields, [line["event"] for line in lines])
    return matches[0]


async def test_one_line_per_step_with_the_bound_context_and_no_secret(
    start_service: Any,
    make_settings: SettingsFactory,
    redis: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    configure_logging("info", "json")  # after capsys took stdout, so the lines land in the capture
    settings = make_settings(log_level="info", magnify_client_id="client-1", **SECRETS)
    service = await start_service(settings)
    events = [
        magnews_event("ok-1", "contacts/delete"),
        magnews_event("dead-1", "contacts/create", email="not-an-address"),
    ]
    async with service.post_webhook(events, params={"token": SECRETS["webhook_secret"]}) as response:
        assert response.status == 200
    async with service.post_webhook(events, params={"token": "wrong-" + SECRETS["webhook_secret"]}) as response:
        assert response.status == 401
    await run_worker_burst(settings)
    headers = {"Authorization": f"Bearer {SECRETS['admin_token']}"}
    async with service.session.post(
        f"{service.url}/admin/replay", json={"event_ids": ["ok-1"]}, headers=headers
    ) as response:
        assert response.status == 202
    async with service.session.get(f"{service.url}/admin/events/ok-1", headers={"Authorization": "Bearer x"}) as r:
        assert r.status == 401

    output = capsys.readouterr().out
    lines = _lines(output)
    assert lines, output

    received = _find(lines, "event received", event_id="ok-1")
    assert (received["source"], received["type"], received["level"]) == ("magnews", "contacts/delete", "info")
    assert received["timestamp"].endswith("Z")

    attempt = _find(lines, "delivered", event_id="ok-1")
    assert attempt["job_id"].startswith("deliver:")
    assert (attempt["source"], attempt["type"], attempt["destination"]) == ("magnews", "contacts/delete", "magicbell")
    assert len(attempt["action"]) == 64 and attempt["status"] == 201

    dead = _find(lines, "dead letter", event_id="dead-1")
    assert dead["level"] == "warning" and dead["job_id"] == attempt["job_id"], "one request, one job"
    assert (dead["source"], dead["type"], dead["destination"]) == ("magnews", "contacts/create", "magicbell")
    assert "not-an-address" in dead["error"] and dead["action"]
    _find(lines, "action invalid", event_id="dead-1")  # the attempt itself, with its reason

    replayed = _find(lines, "event replayed", event_id="ok-1")
    assert (replayed["mode"], replayed["by"], replayed["forced"]) == ("event_ids", "admin-api", False)
    assert _find(lines, "request rejected", path="/webhooks/magnews")["status"] == 401
    assert _find(lines, "request rejected", path="/admin/events/ok-1")["status"] == 401

    secrets = {**SECRETS, "magicbell_token": "sim-magicbell-token", "magnews_token": "sim-magnews-token"}
    for name, secret in secrets.items():
        assert secret not in output, f"{name} was logged"
    assert "Bearer x" not in output


async def test_console_format_keeps_the_context(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    configure_logging("info", "console")
    structlog.contextvars.bind_contextvars(event_id="evt-9", job_id="deliver:evt-9")
    try:
        structlog.get_logger("magbridge.test").info("delivered", destination="magnews", url="https://x/?token=abc")
    finally:
        structlog.contextvars.clear_contextvars()
    line = capsys.readouterr().out.strip()
    assert "delivered" in line and "event_id=evt-9" in line and "job_id=deliver:evt-9" in line
    assert "destination=magnews" in line
    assert "token=abc" not in line and "token=***" in line
