"""``POST /webhooks/magnews``: authenticate, bound, parse, store durably, then acknowledge."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web
from structlog.typing import FilteringBoundLogger

from bridge.events import format_time, is_test_request, parse_magnews_body
from bridge.web.json_bounds import JsonBounds, decode_json
from bridge.web.state import INGEST, SETTINGS
from bridge.web.webhook_guard import WEBHOOK_GUARD
from config.errors import RequestRejected

__all__ = ["JSON_BOUNDS", "WEBHOOK_LOG", "bind_webhook_log", "receive_magnews"]

# The webhook body's bounds, built once from the settings in ``create_app``.
JSON_BOUNDS = web.AppKey("json_bounds", JsonBounds)

# Bound once per app (``bind_webhook_log``): the module-level proxy would build a logger for every
# line, and this one writes a line per event received.
WEBHOOK_LOG = web.AppKey("webhook_log", FilteringBoundLogger)


def bind_webhook_log() -> FilteringBoundLogger:
    """The receiver's logger, as logging is configured now."""
    logger: FilteringBoundLogger = structlog.get_logger("magbridge.webhooks").bind()
    return logger


def _too_large(limit: int) -> RequestRejected:
    return RequestRejected(
        413,
        "Payload too large",
        f"the body is larger than the limit of {limit} bytes",
        errors=[{"field": "$", "message": f"at most {limit} bytes (MAGBRIDGE_WEBHOOK_MAX_BODY_BYTES)"}],
    )


async def _read_json(request: web.Request) -> Any:
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise RequestRejected(
            415,
            "Unsupported media type",
            f"Content-Type must be application/json, got {request.content_type[:100]!r}",
            errors=[{"field": "Content-Type", "message": "must be application/json"}],
        )
    settings = request.app[SETTINGS]
    limit = settings.webhook_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        if request.content.is_eof():  # the whole body has arrived already (most webhooks): no wait
            raw = await request.read()
        else:
            # A slow client holds a connection and a handler; it gets the read timeout, not forever.
            async with asyncio.timeout(settings.webhook_read_timeout_seconds):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    except web.RequestPayloadError as exc:  # a broken chunked or compressed body, or one cut short
        raise RequestRejected(
            400,
            "Unreadable body",
            f"the body could not be read: {str(exc)[:200]}",
            errors=[{"field": "$", "message": "a broken transfer or content encoding, or a body cut short"}],
        ) from None
    except TimeoutError:
        raise RequestRejected(
            408,
            "Request timeout",
            f"the body did not arrive within {settings.webhook_read_timeout_seconds:g} seconds",
            errors=[{"field": "$", "message": "sent too slowly (MAGBRIDGE_WEBHOOK_READ_TIMEOUT_SECONDS)"}],
        ) from None
    return decode_json(raw, request.app[JSON_BOUNDS])


async def receive_magnews(request: web.Request) -> web.Response:
    request.app[WEBHOOK_GUARD].check(request)
    body = await _read_json(request)
    if is_test_request(body):
        request.app[WEBHOOK_LOG].info("webhook test request")
        return web.json_response({"accepted": 0, "duplicates": 0, "event_ids": [], "test": True})
    settings = request.app[SETTINGS]
    envelopes = parse_magnews_body(
        body, received_at=format_time(datetime.now(UTC)), max_events=settings.webhook_max_events
    )
    # An empty array (a test request may be one) holds nothing to store: acknowledged as it is.
    fresh = await request.app[INGEST].ingest(envelopes) if envelopes else []
    log = request.app[WEBHOOK_LOG]
    for envelope, is_new in zip(envelopes, fresh, strict=True):
        log.info(
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
        },
        dumps=_dumps,
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
