"""``magbridge magnews-webhook register|list|update|delete``: the Magnews subscription feeding the receiver.

Magnews v19 endpoints: ``POST /webhooks/create``, ``POST /webhooks/update``, ``GET /webhooks/list``,
``DELETE /webhooks/delete/{id}``.

``register`` subscribes ``MAGBRIDGE_PUBLIC_URL`` + ``/webhooks/magnews`` (with ``?token=`` and the
``MAGBRIDGE_WEBHOOK_SECRET`` when one is set) to the topics the rules listen to: the ``types`` of
every ``magnews`` and ``*`` rule, globs expanded over the documented topics. A subscription to the
same receiver (same URL up to its query) is updated instead of duplicated, so running ``register``
again after a new secret or new rules brings Magnews up to date.

Magnews sends a test request to the URL before it accepts it and answers 400 ``test request failed``
when that does not get a 200; the command says so, with what to check. The test request's body is
unpublished: the receiver answers 200 whatever its shape (see ``bridge.events``), so registration
depends only on the receiver being reachable with the right token. Tokens are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import re
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
from yarl import URL

from bridge.logs import configure_logging
from bridge.store.connections import open_redis
from config.errors import ConfigError, DeliveryError
from config.rules import RuleSet, load_rules
from config.settings import Settings, load_settings
from workers.destinations.magnews import MagnewsClient

__all__ = [
    "KNOWN_TOPICS",
    "RECEIVER_PATH",
    "Subscription",
    "WebhookAdmin",
    "add_webhook_parser",
    "cmd_magnews_webhook",
    "describe_failure",
    "mask_token",
    "receiver_url",
    "rule_topics",
    "run_webhook_command",
    "same_receiver",
]

RECEIVER_PATH = "/webhooks/magnews"
KNOWN_TOPICS = (
    "contacts/create",
    "contacts/update",
    "contacts/unsubscription",
    "contacts/delete",
    *(f"{area}/msg/{kind}" for area in ("communications", "transactionals") for kind in
      ("sent", "open", "click", "conversion", "bounce", "complaint")),
)  # fmt: skip
"""The topics the contract names; rule globs are expanded over these."""
_GLOB_CHARS = frozenset("*?[")
_TOKEN_IN_URL = re.compile(r"(?i)([?&](?:token|access_token|secret)=)[^&\s\"']+")


def mask_token(text: str) -> str:
    """Hide the value of ``?token=`` (the webhook secret) wherever a URL is shown."""
    return _TOKEN_IN_URL.sub(r"\1***", text)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One Magnews webhook object, as the v19 create/update/list examples show it."""

    id: int
    status: str
    uri: str
    topics: str
    last_exec_date: str
    backoff_date: str

    @classmethod
    def from_json(cls, body: Any) -> Subscription:
        if not isinstance(body, dict) or not isinstance(body.get("id"), int):
            raise DeliveryError(f"magnews: unexpected webhook object: {mask_token(str(body))[:200]}")
        return cls(
            id=body["id"],
            status=str(body.get("status", "")),
            uri=str(body.get("uri", "")),
            topics=str(body.get("topics", "")),
            last_exec_date=str(body.get("lastExecDate") or ""),
            backoff_date=str(body.get("backoffDate") or ""),
        )

    def line(self, ours: str | None = None) -> str:
        """One line for the terminal; the token in the URI is masked."""
        mark = "  (this bridge)" if ours is not None and same_receiver(self.uri, ours) else ""
        return (
            f"#{self.id:<4} {self.status:<9} {mask_token(self.uri)}  topics={self.topics}  "
            f"last run {self.last_exec_date or '-'}  backoff {self.backoff_date or '-'}{mark}"
        )


def receiver_url(settings: Settings, public_url: str | None = None) -> str:
    """The URL Magnews should call: the public base URL, the receiver path, and the secret as ``?token=``."""
    base = public_url or (str(settings.public_url) if settings.public_url is not None else None)
    if not base:
        raise ConfigError("set MAGBRIDGE_PUBLIC_URL (or pass --url): the bridge's public https base URL")
    url = URL(base)
    if not url.is_absolute() or url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"public URL {base!r} is not an absolute http(s) URL")
    path = url.path.rstrip("/")
    if not path.endswith(RECEIVER_PATH):
        path += RECEIVER_PATH
    url = url.with_path(path).with_query(None).with_fragment(None)
    if settings.webhook_secret is not None:
        url = url.with_query({"token": settings.webhook_secret.get_secret_value()})
    return str(url)


def rule_topics(rules: RuleSet) -> tuple[list[str], list[str]]:
    """``(topics to subscribe, patterns that match no known topic)`` for the Magnews rules."""
    topics: set[str] = set()
    unmatched: list[str] = []
    for rule in rules.rules:
        if rule.source not in ("magnews", "*"):
            continue
        for pattern in rule.types:
            if not _GLOB_CHARS & set(pattern):
                topics.add(pattern)  # a literal topic, known or not, is subscribed as written
                continue
            matched = [topic for topic in KNOWN_TOPICS if fnmatch.fnmatchcase(topic, pattern)]
            if not matched:
                unmatched.append(pattern)
            topics.update(matched)
    return sorted(topics), unmatched


def same_receiver(a: str, b: str) -> bool:
    """Same scheme, host, port and path: the query (the token) may differ."""
    try:
        first, second = URL(a), URL(b)
    except ValueError:
        return False
    return first.with_query(None).with_fragment(None) == second.with_query(None).with_fragment(None)


def describe_failure(exc: DeliveryError, uri: str | None = None) -> str:
    """A Magnews error answer as a sentence; ``test request failed`` says what to check."""
    error, debug = "", ""
    if exc.body:
        try:
            body = json.loads(exc.body)
        except ValueError:
            body = None
        if isinstance(body, dict):
            error, debug = str(body.get("error") or ""), str(body.get("debugMessage") or "")
    if error == "test request failed":
        where = mask_token(uri) if uri else "the webhook URL"
        return (
            f"Magnews refused the subscription: test request failed ({debug or 'no detail'}). "
            f"Magnews POSTs a test request to {where} and needs HTTP 200 within 5 s: check that "
            "`magbridge web` is running and reachable there from the internet over https with a valid "
            "certificate, and that the URL's token matches MAGBRIDGE_WEBHOOK_SECRET"
        )
    detail = f": {error}" if error else ""
    detail += f" ({mask_token(debug)})" if debug and debug != error else ""
    return f"{exc.message}{detail}"


class WebhookAdmin:
    """The documented ``/v19/webhooks/*`` calls through a :class:`~workers.destinations.magnews.MagnewsClient`."""

    def __init__(self, client: MagnewsClient) -> None:
        self._client = client

    async def subscriptions(self) -> list[Subscription]:
        response = await self._client.request("GET", "/webhooks/list")
        if not isinstance(response.body, list):
            raise DeliveryError("magnews: /webhooks/list did not answer a JSON array")
        return [Subscription.from_json(item) for item in response.body]

    async def create(self, uri: str, topics: list[str]) -> Subscription:
        body = {"uri": uri, "topics": ",".join(topics)}
        return Subscription.from_json((await self._client.request("POST", "/webhooks/create", json_body=body)).body)

    async def update(self, webhook_id: int, **changes: str) -> Subscription:
        body: dict[str, Any] = {"id": webhook_id, **changes}
        return Subscription.from_json((await self._client.request("POST", "/webhooks/update", json_body=body)).body)

    async def delete(self, webhook_id: int) -> None:
        await self._client.request("DELETE", f"/webhooks/delete/{webhook_id}")

    async def register(self, uri: str, topics: list[str]) -> tuple[Subscription, str]:
        """Create, or bring an existing subscription of this receiver up to date; ``(it, what was done)``."""
        wanted = ",".join(sorted(topics))
        for existing in await self.subscriptions():
            if not same_receiver(existing.uri, uri):
                continue
            changes: dict[str, str] = {}
            if existing.uri != uri:
                changes["uri"] = uri
            if ",".join(sorted(existing.topics.split(","))) != wanted:
                changes["topics"] = wanted
            if existing.status != "active":
                changes["status"] = "active"
            if not changes:
                return existing, "unchanged"
            return await self.update(existing.id, **changes), "updated"
        return await self.create(uri, topics), "created"


# --- command line ------------------------------------------------------------------------------------------


def add_webhook_parser(commands: Any) -> None:
    """Add the ``magnews-webhook`` command group to ``commands`` (argparse sub-parsers)."""
    group = commands.add_parser(
        "magnews-webhook",
        help="manage the Magnews webhook subscription (/v19/webhooks/...)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    actions = group.add_subparsers(dest="webhook_action", required=True)
    register = actions.add_parser("register", help="subscribe the receiver to the topics the rules use")
    register.add_argument("--url", help="the bridge's public base URL (default MAGBRIDGE_PUBLIC_URL)")
    register.add_argument("--topics", help="comma-separated topics instead of the rules' topics")
    actions.add_parser("list", help="list the subscriptions (tokens masked)")
    update = actions.add_parser("update", help="change a subscription's URL, topics or status")
    update.add_argument("id", type=int)
    update.add_argument("--url", help="a new public base URL for the receiver")
    update.add_argument("--topics", help="comma-separated topics")
    update.add_argument("--status", choices=("active", "suspended"))
    delete = actions.add_parser("delete", help="delete a subscription")
    delete.add_argument("id", type=int)


def _topics(args: argparse.Namespace, settings: Settings, out: TextIO) -> list[str]:
    if args.topics:
        return sorted({topic.strip() for topic in args.topics.split(",") if topic.strip()})
    topics, unmatched = rule_topics(load_rules(settings.rules_file))
    for pattern in unmatched:
        out.write(f"note: rule type {pattern!r} matches no documented Magnews topic; pass --topics to add some\n")
    if not topics:
        raise ConfigError(f"no rule in {settings.rules_file} listens to Magnews topics; pass --topics")
    return topics


async def _run(args: argparse.Namespace, settings: Settings, admin: WebhookAdmin, out: TextIO) -> int:
    ours = receiver_url(settings) if settings.public_url is not None else None
    action = args.webhook_action
    if action == "list":
        subscriptions = await admin.subscriptions()
        for subscription in subscriptions:
            out.write(subscription.line(ours) + "\n")
        out.write(f"{len(subscriptions)} subscription(s)\n")
    elif action == "register":
        uri = receiver_url(settings, args.url)
        subscription, done = await admin.register(uri, _topics(args, settings, out))
        note = " (Magnews's test request answered 200)" if done != "unchanged" else ""
        out.write(f"{done} webhook #{subscription.id}{note}: {subscription.line()}\n")
    elif action == "update":
        changes = {"status": args.status} if args.status else {}
        if args.url:
            changes["uri"] = receiver_url(settings, args.url)
        if args.topics:
            changes["topics"] = ",".join(_topics(args, settings, out))
        if not changes:
            raise ConfigError("nothing to change: pass --url, --topics or --status")
        out.write(f"updated webhook {(await admin.update(args.id, **changes)).line(ours)}\n")
    else:
        await admin.delete(args.id)
        out.write(f"deleted webhook #{args.id}\n")
    return 0


async def run_webhook_command(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """Run one ``magnews-webhook`` action; a Magnews refusal goes to ``err`` and gives exit status 1."""
    redis = open_redis(settings.redis_url) if settings.magnews_refresh_enabled else None
    try:
        async with aiohttp.ClientSession() as session:
            admin = WebhookAdmin(MagnewsClient.from_settings(session, settings, redis=redis))
            try:
                return await _run(args, settings, admin, out)
            except DeliveryError as exc:
                registering = args.webhook_action == "register"
                uri = receiver_url(settings, args.url) if registering else None
                err.write(f"magbridge: magnews-webhook {args.webhook_action}: {describe_failure(exc, uri)}\n")
                return 1
    finally:
        if redis is not None:
            await redis.aclose()


def cmd_magnews_webhook(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("warning", "console")
    return asyncio.run(run_webhook_command(args, settings, sys.stdout, sys.stderr))
