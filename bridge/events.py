"""Inbound events: the envelope every source is turned into, and the stable event id.

A Magnews webhook body is one event object or an array of them (an empty array holds none). Magnews
does not publish the shape, so the parser reads the contract's shape where it finds it and never
refuses an object for its content: one without a usable ``topic`` or with a ``data`` that is not an
object gets the type ``unclassified`` (no default rule matches it: it is stored and shown as
``ignored``), an ``id`` that cannot be used gives the hashed id, a ``timestamp`` that cannot be read
the time of receipt; the payload is kept as received. Only an array item that is not an object is
refused, with its place named.
A Magnify email metric becomes an envelope through ``magnify_envelope``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config.errors import RequestRejected

__all__ = [
    "MAGNIFY_EVENT_PREFIX",
    "MAGNIFY_EVENT_TYPES",
    "UNCLASSIFIED",
    "Envelope",
    "canonical_json",
    "format_time",
    "is_test_request",
    "magnify_envelope",
    "parse_magnews_body",
]

# The documented values of a Magnify metric's ``emailEvent.type`` (magnify-partner-api, Email Event Types).
MAGNIFY_EVENT_PREFIX = "magnify_send_email_"
MAGNIFY_EVENT_TYPES = tuple(
    MAGNIFY_EVENT_PREFIX + name
    for name in (
        "processed",
        "deferred",
        "delivered",
        "open",
        "click",
        "bounce",
        "dropped",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
    )
)
_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces: safe in keys and headers
_MAX_TOPIC_LENGTH = 200
_TEST_TOPIC = "webhooks/test"
UNCLASSIFIED = "unclassified"
"""The type of a Magnews object the receiver cannot classify: no usable topic, or an unknown shape."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event as the bridge stores it: where it came from, what it is, and the raw payload."""

    id: str
    source: str
    type: str
    occurred_at: str
    payload: dict[str, Any]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal data always gives equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reject(detail: str, field: str) -> RequestRejected:
    return RequestRejected(400, "Invalid event", detail, errors=[{"field": field, "message": detail}])


def _parse_timestamp(value: Any) -> str | None:
    """ISO 8601 or epoch seconds/milliseconds as ``format_time`` text; ``None`` when it is neither."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return format_time(moment)
    seconds = value / 1000 if value > 10**11 else value  # 10**11 s is year 5138: larger means ms
    try:
        return format_time(datetime.fromtimestamp(seconds, tz=UTC))
    except (OverflowError, OSError, ValueError):
        return None


def _event_type(item: dict[str, Any]) -> str:
    topic = item.get("topic")
    usable = isinstance(topic, str) and topic.strip() and len(topic) <= _MAX_TOPIC_LENGTH
    if not usable or not isinstance(item.get("data"), dict | type(None)):
        return UNCLASSIFIED
    return str(topic)


def _magnews_item(item: Any, index: int, received_at: str) -> Envelope:
    where = f"[{index}]"
    if not isinstance(item, dict):
        raise _reject(f"{where}: each event must be a JSON object, got {type(item).__name__}", where)
    event_type = _event_type(item)
    raw_id = item.get("id")
    usable_id = not isinstance(raw_id, bool) and isinstance(raw_id, str | int) and _ID_PATTERN.match(str(raw_id))
    if usable_id:
        event_id = str(raw_id)
    else:
        # No id, or one that cannot key the store: the same body always gives the same id.
        event_id = hashlib.sha256(f"{item.get('topic')}\n{canonical_json(item)}".encode()).hexdigest()
    occurred_at = _parse_timestamp(item.get("timestamp")) or received_at
    return Envelope(id=event_id, source="magnews", type=event_type, occurred_at=occurred_at, payload=item)


def is_test_request(body: Any) -> bool:
    """Magnews sends a test request when a subscription is created; it must get 200 and make no work."""
    return isinstance(body, dict) and (body.get("test") is True or body.get("topic") == _TEST_TOPIC)


def parse_magnews_body(body: Any, *, received_at: str, max_events: int) -> list[Envelope]:
    """Turn a decoded webhook body (one object or an array) into envelopes, or raise ``RequestRejected``."""
    items = body if isinstance(body, list) else [body]
    if len(items) > max_events:
        raise RequestRejected(
            413,
            "Too many events",
            f"{len(items)} events in one request; at most {max_events} are accepted",
            errors=[{"field": "$", "message": f"at most {max_events} events"}],
        )
    return [_magnews_item(item, index, received_at) for index, item in enumerate(items)]


def magnify_envelope(metric: dict[str, Any]) -> Envelope:
    """A Magnify email metric as an event; the id hashes the fields that make the metric unique."""
    email_event = metric.get("emailEvent") or {}
    parts = [
        (metric.get("motion") or {}).get("id"),
        (metric.get("account") or {}).get("id"),
        (metric.get("user") or {}).get("id"),
        email_event.get("type"),
        email_event.get("templateId"),
        email_event.get("templateVersion"),
        metric.get("occurredAt"),
    ]
    digest = hashlib.sha256(canonical_json(parts).encode()).hexdigest()
    occurred_ms = metric.get("occurredAt")
    occurred_at = (
        format_time(datetime.fromtimestamp(occurred_ms / 1000, tz=UTC))
        if isinstance(occurred_ms, int | float) and not isinstance(occurred_ms, bool)
        else format_time(datetime.now(UTC))
    )
    return Envelope(
        id=digest,
        source="magnify",
        type=str(email_event.get("type") or "unknown"),
        occurred_at=occurred_at,
        payload=metric,
    )
