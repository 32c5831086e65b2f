"""The Magnify poll: every metric once in either order, with metrics arriving; its costs, lock and schedule."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from bridge.events import magnify_envelope
from bridge.simulators import SIM_CORE, Simulators, run_simulators
from bridge.store.stats import GAUGES_KEY
from config.errors import MagnifyApiError
from tests.support.magnify import (
    append,
    backend,
    clear_requests,
    counted,
    expected_ids,
    ingested_ids,
    magnify_settings,
    metrics_requests,
    open_poller,
    polled_motions,
    stat,
)
from tests.support.redis_server import RedisServer
from tests.support.service import SettingsFactory
from workers.magnify.checkpoints import CHECKPOINTS_KEY
from workers.magnify.client import MagnifyLimits
from workers.magnify.poller import LOCK_KEY, POLLED_STATES, cron_seconds, magnify_cron_jobs
from workers.worker import create_worker

ORDERS = ["oldest_first", "newest_first"]


@pytest.fixture(params=ORDERS)
def order(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


async def test_first_full_poll_then_an_unchanged_account_costs_one_request_per_motion(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    account = {"motions": 20, "metrics_per_motion": 150, "size_spread": 0.8, "order": order}
    async with run_simulators(magnify=account) as sims:
        async with open_poller(magnify_settings(make_settings, sims), redis) as poller:
            first = await poller.poll_once()
            clear_requests(sims)
            steady = await poller.poll_once()
        expected = expected_ids(sims)
        sizes = [len(motion.metrics) for motion in backend(sims).data.motions if motion.state in POLLED_STATES]
        steady_requests = metrics_requests(sims)

    assert first.outcome == "ok" and first.ingested == len(expected) and first.duplicates == 0
    assert await ingested_ids(redis) == expected
    # Every page full but a motion's last: no request wasted, none beyond the documented limits.
    assert first.requests == Counter(
        token=1, motions=len(POLLED_STATES), metrics=sum(math.ceil(size / 100) for size in sizes)
    )
    assert (steady.outcome, steady.ingested, steady.duplicates) == ("ok", 0, 0)
    assert steady.requests == Counter(motions=len(POLLED_STATES), metrics=polled_motions(sims))
    assert sorted(Counter(record.path for record in steady_requests).values()) == [1] * polled_motions(sims)
    assert all(int(r.query["size"]) <= 100 and int(r.query["from"]) <= 99_900 for r in steady_requests)
    assert counted(poller, "magnify_metrics_ingested") == len(expected)
    assert counted(poller, "magnify_metrics_duplicate") == 0
    received = {
        sample.labels["type"]: sample.value
        for family in poller.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "magbridge_received_total"
    }
    assert sum(received.values()) == len(expected) and "other" not in received, "by source and type, in-process"


@pytest.mark.slow
async def test_metrics_appended_between_cycles(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    async with run_simulators(magnify={"motions": 12, "metrics_per_motion": 300, "order": order}) as sims:
        async with open_poller(magnify_settings(make_settings, sims), redis) as poller:
            await poller.poll_once()
            added = append(sims, {0: 250, 1: 1, 2: 99, 3: 100})
            between = await poller.poll_once()
            added += append(sims, {4: 7})
            again = await poller.poll_once()
        expected = expected_ids(sims)
    assert (between.ingested, between.duplicates, between.resets) == (450, 0, 0)
    assert (again.ingested, again.duplicates) == (7, 0)
    assert await ingested_ids(redis) == expected
    assert counted(poller, "magnify_metrics_ingested") == len(expected)


@pytest.mark.slow
async def test_metrics_appended_while_a_cycle_pages(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    account = {"motions": 12, "metrics_per_motion": 600, "order": order}
    async with run_simulators(magnify=account) as sims:
        sims.magnify_app[SIM_CORE].faults.update({"latency_ms": 2})
        data = backend(sims).data
        executing = data.executing()
        rng = random.Random(1)
        stop = asyncio.Event()
        appended = 0

        async def keep_appending() -> None:
            # A few metrics every few milliseconds, about 500 a second: a busy account.
            nonlocal appended
            while not stop.is_set():
                count = rng.randint(1, 5)
                data.append(rng.choice(executing), count, 0)
                appended += count
                await asyncio.sleep(0.005)

        async with open_poller(magnify_settings(make_settings, sims, magnify_concurrency=3), redis) as poller:
            appender = asyncio.create_task(keep_appending())
            first = await poller.poll_once()  # the first full read, with metrics arriving throughout
            second = await poller.poll_once()  # steady state, still with metrics arriving
            stop.set()
            await appender
            last = await poller.poll_once()
        expected = expected_ids(sims)
    assert appended > 50
    assert first.outcome == second.outcome == last.outcome == "ok"
    assert await ingested_ids(redis) == expected
    assert first.ingested + second.ingested + last.ingested == len(expected)
    assert first.duplicates + second.duplicates + last.duplicates == 0
    assert first.resets + second.resets + last.resets == 0


@pytest.mark.slow
async def test_a_small_budget_spreads_the_first_read_over_cycles_without_loss(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    async with run_simulators(magnify={"motions": 8, "metrics_per_motion": 500, "order": order}) as sims:
        sims.magnify_app[SIM_CORE].faults.update({"latency_ms": 15})
        settings = magnify_settings(make_settings, sims, magnify_concurrency=2)
        async with open_poller(settings, redis, budget_seconds=0.15, states=["EXECUTING"]) as poller:
            reports = [await poller.poll_once()]
            while reports[-1].incomplete and len(reports) < 100:
                reports.append(await poller.poll_once())
        expected = {
            magnify_envelope(metric).id for motion in backend(sims).data.executing() for metric in motion.metrics
        }
    assert len(reports) > 3 and reports[-1].incomplete == 0
    assert await ingested_ids(redis) == expected
    assert sum(report.duplicates for report in reports) == 0


async def test_a_motion_past_the_window_is_logged_and_counted_once(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    # The window is 100,000 metrics; lowered here to 1000 (`from` at most 900) to stay small.
    account = {"motions": 2, "metrics_per_motion": 1100, "order": order, "metrics_from_max": 900}
    async with run_simulators(magnify=account) as sims:
        settings = magnify_settings(make_settings, sims)
        async with open_poller(settings, redis, limits=MagnifyLimits(metrics_from_max=900)) as poller:
            with structlog.testing.capture_logs() as logs:
                first = await poller.poll_once()
            reachable = expected_ids(sims, window=1000)
            append(sims, {0: 5, 1: 5})
            clear_requests(sims)
            second = await poller.poll_once()
            requests = len(metrics_requests(sims))
    overflows = [log for log in logs if log["event"] == "magnify window overflow"]
    assert len(overflows) == 2 and {log["unreachable"] for log in overflows} == {100}
    assert {log["unreachable_end"] for log in overflows} == {"newest" if order == "oldest_first" else "oldest"}
    assert (first.overflow, first.ingested) == (2, 2000)
    assert counted(poller, "magnify_window_overflow") == 2
    assert second.overflow == 0 and requests == 2
    # Newest first still sees what is new; oldest first cannot reach it, and said so.
    assert second.ingested == (0 if order == "oldest_first" else 10)
    if order == "oldest_first":
        assert await ingested_ids(redis) == reachable


async def test_a_changed_list_resets_the_checkpoint_and_loses_nothing(
    make_settings: SettingsFactory, redis: aioredis.Redis, order: str
) -> None:
    async with run_simulators(magnify={"motions": 4, "metrics_per_motion": 250, "order": order}) as sims:
        async with open_poller(magnify_settings(make_settings, sims), redis) as poller:
            await poller.poll_once()
            motion = backend(sims).data.executing()[0]
            checkpoint = json.loads(await redis.hget(CHECKPOINTS_KEY, motion.id))
            checkpoint["high_id"] = "0" * 64  # as if the metric at the boundary were another one
            await redis.hset(CHECKPOINTS_KEY, motion.id, json.dumps(checkpoint))
            append(sims, {0: 3})
            with structlog.testing.capture_logs() as logs:
                report = await poller.poll_once()
            steady = await poller.poll_once()
        expected = expected_ids(sims)
    assert report.resets == 1 and any(log["event"] == "magnify checkpoint reset" for log in logs)
    # The motion is read again from its high-water mark: the 249 older metrics are passed over, the
    # one at the mark is offered again and dedupe absorbs it (newest first had stored the 3 new ones
    # before the mismatch, so they are offered again too).
    assert (report.ingested, report.duplicates) == (3, 1 if order == "oldest_first" else 4)
    assert report.skipped == 249
    assert (steady.resets, steady.ingested) == (0, 0)
    assert await ingested_ids(redis) == expected


async def test_one_failing_motion_does_not_stop_the_others(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_poller(magnify_settings(make_settings, simulators), redis) as poller:
        broken = backend(simulators).data.executing()[0].id
        original = poller.client.email_metrics

        async def forbidden(motion_id: str, **kwargs: Any) -> Any:
            if motion_id == broken:
                raise MagnifyApiError("magnify: HTTP 403", status=403, message="Forbidden")
            return await original(motion_id, **kwargs)

        monkeypatch.setattr(poller.client, "email_metrics", forbidden)
        report = await poller.poll_once()
        monkeypatch.undo()
        healed = await poller.poll_once()
    assert (report.outcome, report.failed) == ("error", 1)
    assert report.ingested == len(expected_ids(simulators)) - 50
    assert (healed.outcome, healed.ingested) == ("ok", 50)
    assert counted(poller, "magnify_polls", outcome="error") == 1


async def test_only_one_poll_runs_at_a_time(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = magnify_settings(make_settings, simulators)
    async with open_poller(settings, redis) as one, open_poller(settings, redis) as other:
        reports = await asyncio.gather(one.poll_once(), other.poll_once())
    assert sorted(report.outcome for report in reports) == ["ok", "skipped_locked"]
    assert await redis.exists(LOCK_KEY) == 0  # released
    for outcome in ("ok", "skipped_locked"):
        assert sum(counted(poller, "magnify_polls", outcome=outcome) for poller in (one, other)) == 1


@pytest.mark.slow
async def test_a_stale_lock_lapses_and_a_lost_lease_stops_the_cycle(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = magnify_settings(make_settings, simulators, magnify_lock_seconds=0.3)
    await redis.set(LOCK_KEY, "a-worker-that-died", px=300)
    async with open_poller(settings, redis) as poller:
        assert (await poller.poll_once()).outcome == "skipped_locked"
        await asyncio.sleep(0.35)
        assert (await poller.poll_once()).outcome == "ok"
        # Someone else holds the lock now (our lease lapsed): the cycle stops at its next request.
        simulators.magnify_app[SIM_CORE].faults.update({"latency_ms": 60})
        await redis.flushall()
        task = asyncio.create_task(poller.poll_once())
        await asyncio.sleep(0.15)
        await redis.set(LOCK_KEY, "someone-else", px=5000)
        with structlog.testing.capture_logs() as logs:
            report = await task
    assert any(log["event"] == "magnify poll lock lost" for log in logs)
    assert report.incomplete > 0
    assert await redis.get(LOCK_KEY) == b"someone-else"  # not released by the loser


async def test_schedule_polls_once_per_slot(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    now = [60 * 16_000 + 20.5]  # 20.5 s into a 60-second slot
    settings = magnify_settings(make_settings, simulators, magnify_poll_seconds=60)
    async with open_poller(settings, redis, clock=lambda: now[0]) as poller:
        assert await poller.tick() == "ok"
        assert await poller.tick() == "not_due"
        now[0] = 60 * 16_000 + 59.9
        assert await poller.tick() == "not_due"
        now[0] = 60 * 16_001  # the next multiple of 60
        assert await poller.tick() == "ok"
    assert cron_seconds(60) == {0}
    assert cron_seconds(45) == {0, 15, 30, 45}
    assert cron_seconds(90) == {0, 30}
    assert cron_seconds(7) == set(range(60))


def test_cron_job_is_registered_only_with_credentials(make_settings: SettingsFactory) -> None:
    assert magnify_cron_jobs(make_settings()) == []
    enabled = make_settings(magnify_client_id="sim-client", magnify_client_secret="sim-secret", magnify_poll_seconds=20)
    [job] = magnify_cron_jobs(enabled)
    assert job.run_at_startup and job.second == {0, 20, 40} and job.max_tries == 1
    worker = create_worker(enabled, burst=True)
    assert "magnify_poll" in worker.functions
    assert "magnify_poll" not in create_worker(make_settings(), burst=True).functions


async def test_wrong_credentials_do_not_crash_and_are_tried_every_cycle(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    now = [5000.0]
    settings = magnify_settings(make_settings, simulators, magnify_client_secret="s3cr3t-wrong", magnify_poll_seconds=1)
    async with open_poller(settings, redis, clock=lambda: now[0]) as poller:
        with structlog.testing.capture_logs() as logs:
            outcomes = [await poller.tick()]
            now[0] += 1
            outcomes.append(await poller.tick())
    assert outcomes == ["error", "error"]
    failures = [log for log in logs if log["event"] == "magnify auth failed"]
    assert len(failures) == 2 and failures[0]["log_level"] == "error" and "invalid_client" in failures[0]["error"]
    assert "s3cr3t-wrong" not in repr(logs)
    assert counted(poller, "magnify_requests", endpoint="token", status="4xx") == 2
    assert counted(poller, "magnify_polls", outcome="error") == 2


async def test_poll_figures(make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis) -> None:
    async with open_poller(magnify_settings(make_settings, simulators), redis) as poller:
        report = await poller.poll_once()
    assert counted(poller, "magnify_requests", endpoint="token", status="2xx") == 1
    assert counted(poller, "magnify_requests", endpoint="motions", status="2xx") == len(POLLED_STATES)
    assert counted(poller, "magnify_requests", endpoint="metrics", status="2xx") == report.requests["metrics"]
    assert counted(poller, "magnify_metrics_ingested") == report.ingested > 0
    assert await stat(redis, "received|source=magnify") == report.ingested, "the store's own tally"
    lag = float(await redis.hget(GAUGES_KEY, "magnify_lag_seconds"))
    assert lag > 86400  # the simulator's history ends in 2025-06
    assert poller.metrics.value("magbridge_magnify_poll_duration_seconds_count") == 1
    assert await redis.exists("mb:hist:magnify_poll_duration_seconds") == 0, "histograms stay in the process"


async def test_redis_down_is_an_error_outcome_not_a_crash(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    async with open_poller(magnify_settings(make_settings, simulators), redis) as poller:
        redis_server.stop()
        try:
            with structlog.testing.capture_logs() as logs:
                outcome = await poller.tick()
        finally:
            redis_server.start()
        assert outcome == "error"
        assert any(log["event"] == "magnify poll failed" for log in logs)
        assert (await poller.poll_once()).outcome == "ok"  # back with Redis
