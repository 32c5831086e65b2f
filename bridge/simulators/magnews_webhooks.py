"""Magnews webhook subscriptions and the outbound HTTP calls they make.

A subscription is verified by a test request before it is created; events are POSTed as JSON.
Both use the documented timeouts: 1 s to connect, 5 s to read; only HTTP 200 counts as success.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

__all__ = [
    "DELIVERY_TIMEOUT",
    "TEST_REQUESTS",
    "WEBHOOK_STATUSES",
    "Delivery",
    "Webhook",
    "WebhookRegistry",
    "WebhookSender",
    "format_date",
    "normalize_topics",
    "test_request_body",
    "valid_uri",
]

DELIVERY_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=1, sock_read=5)
WEBHOOK_STATUSES = frozenset({"active", "suspended"})
TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
# Dates in webhook objects use the account's dateTimeFormat from /account/userinfo: dd/MM/yyyy HH:mm.
DATE_FORMAT = "%d/%m/%Y %H:%M"


# The test request's body is unpublished (reading ``test_request``): the simulator's own
# ``{"topic": "webhooks/test", "test": true, ...}``, an empty object, ``{"test": true}``, a sample
# event (the contract's example, ``contacts/update``), or an array holding that sample event.
TEST_REQUESTS = ("topic_test", "empty", "test_flag", "sample_event", "array")
TEST_TOPIC = "webhooks/test"


def test_request_body(shape: str, timestamp: str) -> Any:
    """The body of the test request sent before a subscription is created or its URI changed."""
    sample = {
        "id": f"test-{timestamp}",
        "topic": "contacts/update",
        "timestamp": timestamp,
        "data": {"idcontact": 500106, "iddatabase": 7, "email": "a@example.com", "status": "subscribed"},
    }
    bodies: dict[str, Any] = {
        "topic_test": {"topic": TEST_TOPIC, "test": True, "timestamp": timestamp},
        "empty": {},
        "test_flag": {"test": True},
        "sample_event": sample,
        "array": [sample],
    }
    return bodies[shape]


def format_date(moment: datetime | None) -> str:
    """``dd/MM/yyyy HH:mm`` (UTC), or ``""`` for a date that has not happened, as in the examples."""
    return moment.astimezone(UTC).strftime(DATE_FORMAT) if moment is not None else ""


def normalize_topics(raw: object) -> str | None:
    """Comma-separated topics, deduplicated and sorted as the spec's examples show; ``None`` if invalid."""
    if not isinstance(raw, str):
        return None
    topics = {topic.strip() for topic in raw.split(",") if topic.strip()}
    if not topics or not all(TOPIC_PATTERN.match(topic) for topic in topics):
        return None
    return ",".join(sorted(topics))


def valid_uri(raw: object, *, require_https: bool) -> bool:
    """An absolute http(s) URI with a host (https only when ``require_https``)."""
    if not isinstance(raw, str):
        return False
    try:
        uri = URL(raw)
    except ValueError:
        return False
    schemes = ("https",) if require_https else ("http", "https")
    return uri.is_absolute() and uri.scheme in schemes and bool(uri.host)


@dataclass
class Webhook:
    """One subscription; ``to_json`` gives the documented response object."""

    id: int
    status: str
    uri: str
    topics: str
    digital_certificate_id: int | None
    creation_date: datetime
    creation_user_id: int
    last_mod_date: datetime
    last_mod_user_id: int
    last_exec_date: datetime | None = None
    backoff_date: datetime | None = None

    def wants(self, topic: str) -> bool:
        """Whether an event of ``topic`` is delivered to this subscription."""
        return self.status == "active" and topic in self.topics.split(",")

    def to_json(self) -> dict[str, Any]:
        """The webhook object as the create/update/get/list examples show it."""
        return {
            "id": self.id,
            "status": self.status,
            "uri": self.uri,
            "topics": self.topics,
            "digitalCertificateId": self.digital_certificate_id,
            "creationDate": format_date(self.creation_date),
            "creationUserId": self.creation_user_id,
            "lastModDate": format_date(self.last_mod_date),
            "lastModUserId": self.last_mod_user_id,
            "lastExecDate": format_date(self.last_exec_date),
            "backoffDate": format_date(self.backoff_date),
        }


class WebhookRegistry:
    """Subscriptions by id, ids counting up from 1."""

    def __init__(self, user_id: int) -> None:
        self._user_id = user_id
        self._webhooks: dict[int, Webhook] = {}
        self._next_id = 1

    def reset(self) -> None:
        """Forget every subscription."""
        self._webhooks.clear()
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._webhooks)

    def get(self, webhook_id: int) -> Webhook | None:
        """The subscription with this id, if any."""
        return self._webhooks.get(webhook_id)

    def all(self) -> list[Webhook]:
        """Every subscription, by id."""
        return list(self._webhooks.values())

    def create(self, uri: str, topics: str) -> Webhook:
        """A new active subscription (the caller has verified the endpoint)."""
        now = datetime.now(UTC)
        # The certificate that secures the endpoint; a plain-http endpoint (allowed in the simulator) has none.
        certificate = self._next_id if URL(uri).scheme == "https" else None
        webhook = Webhook(self._next_id, "active", uri, topics, certificate, now, self._user_id, now, self._user_id)
        self._webhooks[webhook.id] = webhook
        self._next_id += 1
        return webhook

    def touch(self, webhook: Webhook) -> None:
        """Mark ``webhook`` as modified now by the token's user."""
        webhook.last_mod_date = datetime.now(UTC)
        webhook.last_mod_user_id = self._user_id

    def delete(self, webhook_id: int) -> bool:
        """Remove a subscription; ``False`` if it did not exist."""
        return self._webhooks.pop(webhook_id, None) is not None


@dataclass(frozen=True)
class Delivery:
    """Outcome of one POST: the HTTP status, or the connection error when there was no response."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Only 200 counts, as the spec says of the test request."""
        return self.status == 200


class WebhookSender:
    """POSTs JSON to subscriber endpoints; its client session lives as long as the app (``lifespan``)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx`` hook: open the client session on startup, close it on cleanup."""
        async with aiohttp.ClientSession(timeout=DELIVERY_TIMEOUT) as session:
            self._session = session
            yield
            self._session = None

    async def post(self, uri: str, payload: Any) -> Delivery:
        """POST ``payload`` to ``uri``; never raises for network problems."""
        if self._session is None:
            return Delivery(None, "simulator is not running")
        try:
            async with self._session.post(uri, json=payload) as response:
                await response.read()
                return Delivery(response.status)
        except TimeoutError:
            return Delivery(None, f"timeout calling {uri}")
        except aiohttp.ClientError as exc:
            return Delivery(None, f"{type(exc).__name__}: {exc}")
