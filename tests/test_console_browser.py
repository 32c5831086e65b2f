"""The operator console in a real browser: headless Chromium, driven by selenium, against a real
``magbridge web`` process and a real ``magbridge worker`` on the tests' private Redis, delivering to the
simulators. An operator logs in (a wrong token first), filters events, opens one, replays a dead letter
(a form stripped of its CSRF token first) and sees the simulator receive it, then logs out.

The run writes a screenshot of each page to ``docs/console/`` (docs/console.md shows them). Chromium
and chromedriver come from Debian's packages (``make install-dev``); without them this fails, saying
so, rather than skipping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.simulators import Simulators, run_simulators
from bridge.store import keys
from config.settings import Settings
from tests.support.browser import Browser, browser_paths
from tests.support.commands import magnews_webhook
from tests.support.console import TOKEN
from tests.support.events import magnews_event
from tests.support.magnify import CREDENTIALS
from tests.support.processes import start_process, stop_process
from tests.support.redis_server import free_port
from tests.support.service import SettingsFactory
from tests.support.simulators import set_faults, sim_requests
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"
DOOMED = "unsubscribed-ada"  # MagicBell refuses its broadcast once (400): a dead letter
SECRET_VALUE = "sk-live-4c9d1e"


async def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"{url} did not come up"
            await asyncio.sleep(0.05)


async def _settled(redis: aioredis.Redis) -> bool:
    """Every stored event is final (none pending)."""
    return await redis.zcard(keys.PENDING_INDEX) == 0 and await redis.zcard(keys.EVENTS_INDEX) > 0


async def _post(url: str, events: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/webhooks/magnews", json=events) as response:
        assert response.status == 200, await response.text()


@pytest.fixture
async def sims() -> AsyncIterator[Simulators]:
    # A small Magnify account: the pages show a few motions, and the worker delivers their merges quickly.
    async with run_simulators(magnify={"motions": 6, "metrics_per_motion": 8}) as simulators:
        yield simulators


@pytest.fixture
async def bridge(make_settings: SettingsFactory, sims: Simulators, redis: aioredis.Redis) -> AsyncIterator[Settings]:
    """``magbridge web`` and ``magbridge worker`` as processes; yields their settings."""
    browser_paths()  # fail first, and clearly, without a browser
    port = free_port()
    endpoints = sims.endpoints
    settings = make_settings(
        admin_token=TOKEN,
        host="127.0.0.1",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        magicbell_base_url=endpoints.magicbell_base_url,
        magnews_base_url=endpoints.magnews_base_url,
        magnify_base_url=endpoints.magnify_base_url,
        magnify_token_url=endpoints.magnify_token_url,
        magnify_start="everything",
        log_level="warning",
        **CREDENTIALS,
    )
    web = await start_process("web", settings)
    worker = await start_process("worker", settings)
    try:
        await _wait_http(f"http://127.0.0.1:{port}/healthz")
        yield settings
    finally:
        await stop_process(web)
        await stop_process(worker)


async def _fill_the_bridge(settings: Settings, sims: Simulators, redis: aioredis.Redis) -> None:
    """A dead letter, some webhooks, the worker's first Magnify poll and the subscription, all delivered."""
    url = str(settings.public_url).rstrip("/")
    magicbell = sims.endpoints.magicbell_base_url
    await set_faults(magicbell, fail_next=[400])
    await _post(url, [magnews_event(DOOMED, "contacts/unsubscription", email="ada@example.com")])

    async def doomed_failed() -> bool:
        return await redis.zscore(keys.DEAD_INDEX, DOOMED) is not None

    await wait_until(doomed_failed, 30)
    events = [magnews_event(f"welcome-{n}", "contacts/create", email=f"new{n}@example.com") for n in range(2)]
    events += [magnews_event(f"update-{n}", "contacts/update") for n in range(4)]
    events += [magnews_event(f"bounce-{n}", "communications/msg/bounce") for n in range(2)]
    events += [
        magnews_event(f"deleted-{n}", "contacts/delete", email=f"gone{n}@example.com", api_key=SECRET_VALUE)
        for n in range(3)
    ]
    await _post(url, events)

    async def polled() -> bool:  # the worker polls Magnify at its start
        return await redis.hlen(keys.MAGNIFY_CHECKPOINTS) > 0 and await redis.exists(keys.MAGNIFY_LAST_CYCLE) == 1

    await wait_until(polled, 30)
    assert (await magnews_webhook(settings, "register"))[0] == 0
    await wait_until(lambda: _settled(redis), 60)


async def test_an_operator_logs_in_filters_opens_replays_a_dead_letter_and_logs_out(
    bridge: Settings, sims: Simulators, redis: aioredis.Redis
) -> None:
    settings = bridge
    await _fill_the_bridge(settings, sims, redis)
    browser = Browser(str(settings.public_url).rstrip("/"), SCREENSHOTS)
    try:
        # Not logged in: the login form, which comes back to the page asked for.
        await browser.go("/console/events")
        assert (await browser.path()).startswith("/console/login?next=")
        await browser.screenshot("login")
        await browser.fill("#token", "not-the-admin-token")
        await browser.click("#login")
        await browser.wait_for_text("#problem", "That is not the admin token.")
        await browser.fill("#token", TOKEN)
        await browser.click("#login")
        await browser.wait_for_path("/console/events")

        # Filter the events, open one.
        await browser.fill("input[name=type]", "contacts/delete")
        await browser.click("#apply-filters")
        await browser.wait_for_path("/console/events?source=&type=contacts%2Fdelete")
        rows = await browser.texts("#events tbody tr")
        assert len(rows) == 3 and all("contacts/delete" in row and "delivered" in row for row in rows), rows
        await browser.screenshot("events")
        await browser.click("#events a.event-link")
        await browser.wait_for_path("/console/events/deleted-")
        assert "delivered" in await browser.text("#event-status")
        assert "magicbell.broadcast: delivered" in await browser.text("#timeline")
        payload = await browser.text("#payload")
        assert SECRET_VALUE not in payload and '"api_key": "***"' in payload
        await browser.screenshot("event")

        # The dead letter: preview its replay; a form without its CSRF token is refused.
        await browser.go("/console/dead-letters")
        assert DOOMED in await browser.text("#dead-letters")
        await browser.screenshot("dead-letter-list")
        await browser.click(f'input[name=event_id][value="{DOOMED}"]')
        await browser.click("#preview-selected")
        await browser.wait_for_text("#would-replay", "1 event would be queued again")
        await browser.screenshot("replay-preview")
        await browser.script("document.querySelector('#replay-form input[name=csrf]').remove()")
        await browser.click("#replay")
        await browser.wait_for_text("#problem", "lacks its CSRF token")
        assert await redis.zscore(keys.DEAD_INDEX, DOOMED) is not None, "the refused form replayed nothing"

        # Replay it for real and watch it delivered.
        await browser.go("/console/dead-letters")
        await browser.click(f'input[name=event_id][value="{DOOMED}"]')
        await browser.click("#preview-selected")
        await browser.wait_for_path("/console/replay/preview")
        await browser.click("#replay")
        await browser.wait_for_path("/console/dead-letters?replayed=1")
        await browser.wait_for_text("#watched", "delivered")  # the page's script refreshes it
        assert "No dead letter" in await browser.text("#dead-letters")
        await browser.screenshot("dead-letters")
        sent = await sim_requests(sims.endpoints.magicbell_base_url, "/broadcasts")
        ours = [r["status"] for r in sent if r["body"]["custom_attributes"]["magbridge_event_id"] == DOOMED]
        assert ours == [400, 201], "refused once, delivered by the replay"

        # The other pages.
        await browser.go("/console/")
        assert "0" == (await browser.text("#dead-letters")).strip()
        await browser.screenshot("overview")
        await browser.go("/console/magnify")
        assert "metrics ingested" in await browser.text("#last-cycle")
        await browser.screenshot("magnify")
        await browser.go("/console/magnews")
        assert "this bridge" in await browser.text("#subscriptions")
        await browser.screenshot("magnews")

        # Log out: the session is over.
        await browser.click("#logout")
        await browser.wait_for_path("/console/login?bye=1")
        assert "You are logged out." in await browser.text()
        await browser.go("/console/")
        assert (await browser.path()).startswith("/console/login?next=")
    finally:
        browser.quit()
