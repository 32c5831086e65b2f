"""``POST /webhooks/magnews``: authenticate, bound, parse, store durably, then acknowledge."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from bridge.events import format_time, is_test_request, parse_magnews_body
from bridge.state import SETTINGS, STORE
from config.errors import RequestRejected

__all__ = ["receive_magnews"]

_log = structlog.get_logger("magbridge.webhooks")


def _check_token(request: web.Request) -> None:
    secret = request.app[SETTINGS].webhook_secret
    if secret is None:
        return
    given = request.query.get("token") or request.headers.get("X-Webhook-Token") or ""
    if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
        detail = "the webhook token is wrong" if given else "the webhook token is missing"
        raise RequestRejected(401, "Unauthorized", detail)


async def _read_json(request: web.Request) -> Any:
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise RequestRejected(
            415,
            "Unsupported media type",
            f"Content-Type must be application/json, got {request.content_type!r}",
        )
    limit = request.app[SETTINGS].webhook_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise RequestRejected(413, "Payload too large", f"the body is larger than the limit of {limit} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestRejected(413, "Payload too large", f"the body is larger than the limit of {limit} bytes") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestRejected(400, "Invalid JSON", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RequestRejected(
            400,
            "Invalid JSON",
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None


async def receive_magnews(request: web.Request) -> web.Response:
    _check_token(request)
    body = await _read_json(request)
    if is_test_request(body):
        _log.info("webhook test request")
        return web.json_response({"accepted": 0, "duplicates": 0, "event_ids": [], "test": True})
    settings = request.app[SETTINGS]
    envelopes = parse_magnews_body(
        body, received_at=format_time(datetime.now(UTC)), max_events=settings.webhook_max_events
    )
    fresh = await request.app[STORE].ingest(envelopes)
    for envelope, is_new in zip(envelopes, fresh, strict=True):
        _log.info(
            "event received" if is_new else "event duplicate",
            event_id=envelope.id,
            source=envelope.source,
            type=envelope.type,
        )
    accepted = sum(fresh)
    return web.json_response(
        {
            "accepted": accepted,
            "duplicates": len(fresh) - accepted,
            "event_ids": [envelope.id for envelope in envelopes],
        }
    )
