"""Magnify readings and edges of the spec: the motions page size, motions out of the listing window,
and where polling starts (``MAGBRIDGE_MAGNIFY_START``) with a high-water mark that survives resets."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog

from bridge.events import magnify_envelope
from bridge.simulators import SIM_CORE, Simulators, run_simulators
from bridge.store import keys
from bridge.store.reads import EventReader
from bridge.store.stats import GAUGES_KEY
from config.errors import ConfigError
from config.settings import load_settings
from tests.support.magnify import (
    api_requests,
    backend,
    clear_requests,
    counted,
    ingested_ids,
    magnify_settings,
    open_poller,
)
from tests.support.service import SettingsFactory
from tests.support.workers import run_worker_burst
from workers.magnify.checkpoints import CHECKPOINTS_KEY
from workers.magnify.client import MagnifyLimits
from workers.magnify.poller import POLLED_STATES, QUIET_READS

ORDERS = ["oldest_first", "newest_first"]
BROADCAST = {f"magnify_send_email_{kind}" for kind in ("bounce", "dropped", "unsubscribe", "group_unsubscribe")}
BROADCAST |= {"magnify_send_email_spamreport"}
TOKEN_FORM = {
    "grant_type": "client_credentials",
    "client_id": "sim-client",
    "client_secret": "sim-secret",
    "scope": "partner-api/motions.read",
}


@pytest.fixture(params=ORDERS)
def order(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _polled_metrics(sims: Simulators) -> list[dict[str, Any]]:
    return [
        metric for motion in backend(sims).data.motions if motion.state in POLLED_STATES for metric in motion.metrics
    ]


async def _deliveries(sims: Simulators, redis: aioredis.Redis, event_ids: set[str]) -> dict[str, int]:
    """What the worker did with ``event_ids``: events, delivered, ignored, dead letters, and side effects
    beyond one per action (MagicBell broadcasts per event, Magnews merge requests per idempotency key)."""
    store = EventReader(redis)
    statuses: Counter[str] = Counter()
    for event_id in event_ids:
        event = await store.get(event_id, with_actions=False)
        statuses[event.status if event else "missing"] += 1
    broadcasts = [
        record.body["custom_attributes"]["magbridge_event_id"]
        for record in sims.magicbell_app[SIM_CORE].records
        if record.path == "/broadcasts" and record.method == "POST" and record.status == 201
    ]
    merges = [
        record.headers.get("Idempotency-Key", "")
        for record in sims.magnews_app[SIM_CORE].records
        if record.path.endswith("merge") and 200 <= record.status < 300
    ]
    return {
        "events": len(event_ids),
        "delivered": statuses["delivered"],
        "ignored": statuses["ignored"],
        "dead": int(await redis.zcard(keys.DEAD_INDEX)),
        "broadcasts": len(broadcasts),
        "duplicated": (len(broadcasts) - len(set(broadcasts))) + (len(merges) - len(set(merges))),
        "foreign_broadcasts": len(set(broadcasts) - event_ids),
    }


# --- item: the motions page size (reading max_page_size) ------------------------------------------------


@pytest.mark.parametrize("max_page_size", ["1000", "100"])
async def test_motions_page_size_follows_the_api_and_remembers_it(
    make_settings: SettingsFactory, redis: aioredis.Redis, max_page_size: str
) -> None:
    readings = {"magnify": {"max_page_size": max_page_size}}
    async with run_simulators(magnify={"motions": 10, "metrics_per_motion": 6}, readings=readings) as sims:
        settings = magnify_settings(make_settings, sims, magicbell_max_rps=0, magnews_max_rps=0)
        async with open_poller(settings, redis) as poller:
            with structlog.testing.capture_logs() as logs:
                first = await poller.poll_once()
                second = await poller.poll_once()
        listings = [
            (record.query["size"], record.status)
            for record in api_requests(sims, "/motions")
            if record.path == "/v1/partner/motions"
        ]
        await run_worker_burst(settings)
        expected = {magnify_envelope(metric).id for metric in _polled_metrics(sims)}
        outcome = await _deliveries(sims, redis, expected)

    assert (first.outcome, second.outcome) == ("ok", "ok")
    assert first.ingested == len(expected) and second.ingested == 0
    assert await ingested_ids(redis) == expected
    lowered = [log for log in logs if log["event"] == "magnify motions page size lowered"]
    states = len(POLLED_STATES)
    if max_page_size == "1000":
        assert listings == [("1000", 200)] * (2 * states) and not lowered
    else:
        # One refusal naming `size`, then 100 for every later listing of this process.
        assert listings == [("1000", 400)] + [("100", 200)] * (2 * states)
        assert len(lowered) == 1 and lowered[0]["size"] == 100
    assert outcome["dead"] == 0 and outcome["duplicated"] == 0 and outcome["foreign_broadcasts"] == 0
    assert outcome["delivered"] + outcome["ignored"] == outcome["events"]
    print(f"\nmax_page_size={max_page_size}: {outcome}")


async def test_the_page_size_reading_is_chosen_at_run_time_with_the_documented_error(
    simulators: Simulators,
) -> None:
    base = simulators.endpoints.magnify_base_url
    root = base.removesuffix("/v1/partner")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{root}/oauth2/token", data=TOKEN_FORM) as response:
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/motions?size=1000", headers=headers) as response:
            before = response.status
        async with http.post(f"{root}/_sim/readings", json={"max_page_size": "100"}) as response:
            assert response.status == 200
        async with http.get(f"{base}/motions?size=101", headers=headers) as response:
            refused, body = response.status, await response.json()
        async with http.get(f"{base}/motions?size=100", headers=headers) as response:
            after = response.status
    assert (before, refused, after) == (200, 400, 200)
    assert body["validationErrors"] == ["size: should be <= 100"] and body["instance"] == "/v1/partner/motions"
    assert set(body) == {"type", "message", "detail", "status", "instance", "validationErrors"}


async def test_a_400_not_about_size_still_ends_the_cycle(make_settings: SettingsFactory, redis: aioredis.Redis) -> None:
    readings = {"magnify": {"max_page_size": "100"}}
    async with run_simulators(magnify={"motions": 4, "metrics_per_motion": 2}, readings=readings) as sims:
        async with open_poller(magnify_settings(make_settings, sims), redis, states=("NOT_A_STATE",)) as poller:
            report = await poller.poll_once()
        sizes = [record.query.get("size") for record in api_requests(sims, "/motions")]
    # The first 400 names size and state: the size falls back, the state's 400 is an error.
    assert report.outcome == "error" and "state" in report.error
    assert sizes == ["1000", "100"]


# --- item: motions out of the listing window ---------------------------------------------------------------


async def test_unlisted_motions_are_read_by_id_end_to_end(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    """Real limits under the 100-item reading: 200 motions per state are listable; older ones are read by id."""
    readings = {"magnify": {"max_page_size": "100"}}
    async with run_simulators(magnify={"motions": 4, "metrics_per_motion": 10, "seed": 3}, readings=readings) as sims:
        settings = magnify_settings(make_settings, sims, magicbell_max_rps=0, magnews_max_rps=0)
        data = backend(sims).data
        originals = data.executing()
        assert len(originals) == 4
        async with open_poller(settings, redis) as poller:
            first = await poller.poll_once()
            data.create(250, state="EXECUTING")  # newer motions push the 4 out of from <= 100
            for motion in originals:
                data.append(motion, 3, int(datetime.now(UTC).timestamp() * 1000))
            clear_requests(sims)
            second = await poller.poll_once()
            by_id = [record.path for record in api_requests(sims, "/motions/") if not record.path.endswith("metrics")]
        await run_worker_burst(settings)
        expected = {magnify_envelope(metric).id for motion in originals for metric in motion.metrics}
        outcome = await _deliveries(sims, redis, expected)
        gauges = await redis.hgetall(GAUGES_KEY)  # type: ignore[misc]

    assert first.ingested == 40 and first.unlisted == 0
    assert second.motions_unreachable == 254 - 200 and second.unlisted == 4
    assert second.ingested == 12 and second.duplicates == 0
    assert sorted(by_id) == sorted(f"/v1/partner/motions/{motion.id}" for motion in originals)
    assert float(gauges[b"magnify_motions_unlisted"]) == 54
    assert await ingested_ids(redis) == expected
    assert outcome["dead"] == 0 and outcome["duplicated"] == 0 and outcome["foreign_broadcasts"] == 0
    assert outcome["delivered"] + outcome["ignored"] == outcome["events"] == 52
    broadcast = [m for motion in originals for m in motion.metrics if m["emailEvent"]["type"] in BROADCAST]
    assert outcome["broadcasts"] == len(broadcast)
    print(f"\nunlisted motions: {outcome}")


async def test_an_unlisted_motion_is_followed_until_finished_and_quiet(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    # Lowered limits: the listing reaches 2 motions per state (one page of 2, from 0 only).
    small = MagnifyLimits(motions_size_max=2, motions_from_max=0)
    async with run_simulators(magnify={"motions": 4, "metrics_per_motion": 5, "order": order}) as sims:
        settings = magnify_settings(make_settings, sims)
        data = backend(sims).data
        async with open_poller(settings, redis) as poller:
            assert (await poller.poll_once()).ingested == 20
        followed = data.executing()[2:]  # the two oldest: out of the small listing
        async with open_poller(settings, redis, limits=small) as poller:
            data.append(followed[0], 2, int(datetime.now(UTC).timestamp() * 1000))
            busy = await poller.poll_once()
            # It finishes; two newer COMPLETED motions keep it out of the COMPLETED listing too.
            data.create(2, state="COMPLETED")
            followed[0].state = "COMPLETED"
            data.append(followed[0], 1, int(datetime.now(UTC).timestamp() * 1000))  # a late open
            late = await poller.poll_once()
            quiet = [await poller.poll_once() for _ in range(QUIET_READS)]
            clear_requests(sims)
            after = await poller.poll_once()
            paths = [record.path for record in api_requests(sims)]
        checkpoint = json.loads(await redis.hget(CHECKPOINTS_KEY, followed[0].id))  # type: ignore[misc]

    assert (busy.unlisted, busy.motions_unreachable, busy.ingested) == (2, 2, 2)
    assert (late.unlisted, late.ingested) == (2, 1)  # still followed: a new metric is not quiet
    assert [report.retired for report in quiet] == [0, 1]  # finished, and nothing new twice
    assert checkpoint["retired"] is True
    assert after.unlisted == 1  # the other one is still EXECUTING: followed
    assert not any(followed[0].id in path for path in paths)
    assert any(followed[1].id in path for path in paths)


async def test_a_motion_gone_from_the_api_is_retired(make_settings: SettingsFactory, redis: aioredis.Redis) -> None:
    small = MagnifyLimits(motions_size_max=2, motions_from_max=0)
    async with run_simulators(magnify={"motions": 4, "metrics_per_motion": 3}) as sims:
        settings = magnify_settings(make_settings, sims)
        data = backend(sims).data
        async with open_poller(settings, redis) as poller:
            await poller.poll_once()
        gone = data.executing()[3]
        data.motions.remove(gone)
        del data.by_id[gone.id]
        async with open_poller(settings, redis, limits=small) as poller:
            report = await poller.poll_once()
            again = await poller.poll_once()
    assert (report.outcome, report.retired, report.unlisted) == ("ok", 1, 2)
    assert again.unlisted == 1


# --- item: where polling starts, and the high-water mark --------------------------------------------------


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


async def test_start_now_ingests_nothing_old_then_what_is_new_end_to_end(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    async with run_simulators(magnify={"motions": 6, "metrics_per_motion": 20, "order": order}) as sims:
        settings = magnify_settings(make_settings, sims, magnify_start="now", magicbell_max_rps=0, magnews_max_rps=0)
        data = backend(sims).data
        history = len(_polled_metrics(sims))
        async with open_poller(settings, redis) as poller:
            first = await poller.poll_once()
            started = int(await redis.get(keys.MAGNIFY_START) or 0)
            motion = data.executing()[0]
            data.append(motion, 5, _now_ms())
            (newcomer,) = data.create(1, state="EXECUTING")
            data.append(newcomer, 4, _now_ms())  # a motion created after the start: read whole
            second = await poller.poll_once()
        new = {magnify_envelope(m).id for m in motion.metrics[-5:] + newcomer.metrics}
        await run_worker_burst(settings)
        outcome = await _deliveries(sims, redis, new)

    assert first.ingested == 0 and first.skipped == history and started > 0
    assert counted(poller, "magnify_metrics_skipped") == history
    assert second.ingested == 9 and second.skipped == 0
    assert await ingested_ids(redis) == new
    assert outcome["dead"] == 0 and outcome["duplicated"] == 0 and outcome["foreign_broadcasts"] == 0
    assert outcome["delivered"] + outcome["ignored"] == outcome["events"] == 9
    print(f"\nstart=now {order}: {outcome}")


async def test_start_everything_ingests_the_history(make_settings: SettingsFactory, redis: aioredis.Redis) -> None:
    async with run_simulators(magnify={"motions": 6, "metrics_per_motion": 20}) as sims:
        async with open_poller(magnify_settings(make_settings, sims, magnify_start="everything"), redis) as poller:
            report = await poller.poll_once()
        expected = {magnify_envelope(metric).id for metric in _polled_metrics(sims)}
    assert report.ingested == len(expected) > 0 and report.skipped == 0
    assert await ingested_ids(redis) == expected
    assert not await redis.exists(keys.MAGNIFY_START)


async def test_start_at_a_date_ingests_what_occurred_since(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    async with run_simulators(magnify={"motions": 6, "metrics_per_motion": 20, "order": order}) as sims:
        metrics = _polled_metrics(sims)
        times = sorted(metric["occurredAt"] for metric in metrics)
        cut = times[len(times) // 2]
        iso = datetime.fromtimestamp(cut / 1000, UTC).isoformat(timespec="milliseconds")
        async with open_poller(magnify_settings(make_settings, sims, magnify_start=iso), redis) as poller:
            report = await poller.poll_once()
        expected = {magnify_envelope(m).id for m in metrics if m["occurredAt"] >= cut}
    assert 0 < len(expected) < len(metrics)
    assert report.ingested == len(expected) and report.skipped == len(metrics) - len(expected)
    assert await ingested_ids(redis) == expected


@pytest.mark.parametrize("value", ["yesterday", "2025-13-01", ""])
def test_a_bad_start_is_a_settings_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(magnify_start=value, _env_file=None)
    message = str(raised.value)
    assert "MAGBRIDGE_MAGNIFY_START" in message and "\n" not in message


async def test_a_checkpoint_reset_reingests_nothing_already_passed(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    async with run_simulators(magnify={"motions": 4, "metrics_per_motion": 120, "order": order}) as sims:
        settings = magnify_settings(make_settings, sims, magnify_start="everything")
        motion = backend(sims).data.executing()[0]
        async with open_poller(settings, redis) as poller:
            first = await poller.poll_once()
            # A contradiction: the boundary metric is not the one recorded.
            checkpoint = json.loads(await redis.hget(CHECKPOINTS_KEY, motion.id))  # type: ignore[misc]
            checkpoint["high_id"] = "0" * 64
            await redis.hset(CHECKPOINTS_KEY, motion.id, json.dumps(checkpoint))  # type: ignore[misc]
            contradicted = await poller.poll_once()
            # A 404 ("no email metrics available") where metrics were: reset again.
            history, motion.metrics = motion.metrics, []
            vanished = await poller.poll_once()
            motion.metrics = history
            backend(sims).data.append(motion, 2, _now_ms())
            back = await poller.poll_once()
            # Forget the dedupe: only the high-water mark can keep the history from coming back.
            await redis.delete(*[key async for key in redis.scan_iter("mb:event:*")])
            await redis.delete(*[key async for key in redis.scan_iter("mb:seen:*")])  # the dedupe markers
            checkpoint = json.loads(await redis.hget(CHECKPOINTS_KEY, motion.id))  # type: ignore[misc]
            checkpoint["high_id"] = "0" * 64
            await redis.hset(CHECKPOINTS_KEY, motion.id, json.dumps(checkpoint))  # type: ignore[misc]
            forgotten = await poller.poll_once()
            steady = await poller.poll_once()
    assert first.ingested == 4 * 120
    assert (contradicted.resets, contradicted.ingested, contradicted.duplicates) == (1, 0, 1)
    assert contradicted.skipped == 119
    assert (vanished.resets, vanished.ingested) == (1, 0)
    # Back with two new metrics: the old ones are passed over, the one at the mark is a duplicate.
    assert (back.ingested, back.duplicates, back.skipped) == (2, 1, 120 - 1)
    # Without dedupe, the reset offers only the metric at the mark: it alone comes back.
    assert (forgotten.resets, forgotten.ingested, forgotten.skipped) == (1, 1, 121)
    assert (steady.resets, steady.ingested) == (0, 0)
    assert counted(poller, "magnify_metrics_ingested") == 4 * 120 + 2 + 1
