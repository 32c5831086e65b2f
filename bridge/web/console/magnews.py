"""``GET /console/magnews``: the Magnews webhook subscriptions as Magnews reports them, asked live.

The same calls as ``magbridge magnews-webhook list`` and ``magbridge check`` (``WebhookAdmin`` over the
Magnews client, ``GET /v19/webhooks/list``), within ``TIMEOUT_SECONDS``. Each subscription is shown
with its token masked; the one pointing at this bridge (``MAGBRIDGE_PUBLIC_URL``) is marked, with the
rule topics it does not cover. A refusal or a timeout is shown on the page, not raised: the page is
how an operator finds out that Magnews is the problem.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bridge.web.console.auth import signed_in
from bridge.web.console.sessions import Session
from bridge.web.console.state import CONSOLE
from bridge.web.state import REDIS
from config.errors import DeliveryError
from config.rules import load_rules
from config.settings import Settings
from workers.destinations.magnews import MagnewsClient

if TYPE_CHECKING:
    from bridge.cli.magnews_webhook import Subscription

# bridge.cli.magnews_webhook is imported where it is used: importing bridge.cli imports the web app,
# which mounts this console.
__all__ = ["TIMEOUT_SECONDS", "magnews_page"]

TIMEOUT_SECONDS = 5.0


@dataclass(slots=True)
class Row:
    subscription: Subscription
    uri: str  # masked
    ours: bool
    missing: list[str] = field(default_factory=list)  # rule topics it does not cover


@functools.lru_cache(maxsize=4)
def _topics(path: Path, _mtime_ns: int) -> list[str]:
    """The topics the rules listen to, parsed again only when the rules file changes."""
    from bridge.cli.magnews_webhook import rule_topics

    return rule_topics(load_rules(path))[0]


def _configured(settings: Settings) -> bool:
    return settings.magnews_token is not None or settings.magnews_refresh_enabled


@signed_in
async def magnews_page(request: web.Request, session: Session) -> web.StreamResponse:
    from bridge.cli.magnews_webhook import WebhookAdmin, describe_failure, mask_token, receiver_url, same_receiver

    console = request.app[CONSOLE]
    settings = console.settings
    ours = receiver_url(settings) if settings.public_url is not None else None
    wanted = _topics(settings.rules_file, settings.rules_file.stat().st_mtime_ns)
    subscriptions: list[Subscription] = []
    problem = ""
    if not _configured(settings):
        problem = "Magnews is not configured (MAGBRIDGE_MAGNEWS_TOKEN or the refresh-token flow)."
    elif console.http is not None:
        client = MagnewsClient.from_settings(console.http, settings, redis=request.config_dict[REDIS])
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                subscriptions = await WebhookAdmin(client).subscriptions()
        except DeliveryError as exc:
            problem = f"Magnews refused: {describe_failure(exc)}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            problem = f"Magnews did not answer within {TIMEOUT_SECONDS:g} s ({type(exc).__name__})."
    rows = []
    for subscription in subscriptions:
        mine = ours is not None and same_receiver(subscription.uri, ours)
        missing = sorted(set(wanted) - set(subscription.topics.split(","))) if mine else []
        rows.append(Row(subscription, mask_token(subscription.uri), mine, missing))
    return console.pages.render(
        "magnews.html",
        nav="magnews",
        session=session,
        rows=rows,
        problem=mask_token(problem),
        ours=mask_token(ours) if ours else None,
        wanted=wanted,
        base_url=str(settings.magnews_base_url),
    )
