"""Polled Magnify metrics flow through the default rules: Magnews merges and MagicBell ops broadcasts."""

from __future__ import annotations

from collections import Counter

import aiohttp
import redis.asyncio as aioredis

from bridge.events import magnify_envelope
from bridge.simulators import SIM_CORE, run_simulators
from bridge.store.reads import EventReader
from tests.support.magnify import backend, magnify_settings, open_poller
from tests.support.service import SettingsFactory
from tests.support.workers import run_worker_burst

PREFIX = "magnify_send_email_"
MERGED = {PREFIX + kind for kind in ("delivered", "open", "click", "bounce", "dropped")}
OPT_OUT = {PREFIX + kind for kind in ("unsubscribe", "group_unsubscribe", "spamreport")}
BROADCAST = {PREFIX + "bounce", PREFIX + "dropped"} | OPT_OUT


async def test_polled_metrics_become_merges_and_broadcasts(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    async with run_simulators(magnify={"motions": 6, "metrics_per_motion": 40, "seed": 4}) as sims:
        settings = magnify_settings(make_settings, sims, magicbell_max_rps=0, magnews_max_rps=0)
        async with open_poller(settings, redis) as poller:
            report = await poller.poll_once()
        await run_worker_burst(settings)
        metrics = [metric for motion in backend(sims).data.motions for metric in motion.metrics]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sims.endpoints.magnews_base_url}/_sim/contacts?iddatabase=7") as response:
                contacts = {contact["fields"]["magnify_user_id"]: contact for contact in await response.json()}
        broadcasts = [
            record.body
            for record in sims.magicbell_app[SIM_CORE].records
            if record.path == "/broadcasts" and record.method == "POST" and record.status == 201
        ]

    assert report.ingested == len(metrics)
    kinds = Counter(metric["emailEvent"]["type"] for metric in metrics)
    assert kinds[PREFIX + "open"] > 0 and sum(kinds[kind] for kind in BROADCAST) > 0

    store = EventReader(redis)
    for metric in metrics:
        event = await store.get(magnify_envelope(metric).id)
        assert event is not None and event.source == "magnify"
        kind = metric["emailEvent"]["type"]
        assert event.status == ("delivered" if kind in MERGED | OPT_OUT else "ignored"), (kind, event.status)

    # One Magnews contact per user, keyed by magnify_user_id, carrying the engagement fields.
    merged_users = {metric["user"]["id"] for metric in metrics if metric["emailEvent"]["type"] in MERGED | OPT_OUT}
    assert set(contacts) == merged_users
    assert all(contact["fields"]["magnify_last_event"].startswith(PREFIX) for contact in contacts.values())
    opted_out = {metric["user"]["id"] for metric in metrics if metric["emailEvent"]["type"] in OPT_OUT}
    assert {user for user, contact in contacts.items() if contact["status"] == "unsubscribed"} == opted_out

    # One ops broadcast per bounce, drop, unsubscribe and spam report, naming its event.
    expected = {magnify_envelope(metric).id for metric in metrics if metric["emailEvent"]["type"] in BROADCAST}
    assert {body["custom_attributes"]["magbridge_event_id"] for body in broadcasts} == expected
    assert all(body["category"] == "magnify" for body in broadcasts)
