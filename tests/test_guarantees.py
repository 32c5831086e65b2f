"""Delivery guarantees under faults: every accepted event is delivered once or dead-lettered.

Figures each test measures are printed (``pytest -s`` shows them); the assertions are about
correctness (nothing lost, nothing repeated), never about speed.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.simulators import Simulators
from bridge.simulators.common import SIM_CORE
from bridge.store.reads import EventReader
from tests.support.processes import start_process, stop_process
from tests.support.redis_server import RedisServer
from tests.support.service import Service, SettingsFactory
from tests.support.store import ingest
from tests.support.waiting import statuses, wait_delivered, wait_until
from tests.support.workers import run_worker_burst, running_worker


def delete_event(number: int, prefix: str = "g") -> dict[str, Any]:
    return {"id": f"{prefix}-{number}", "topic": "contacts/delete", "data": {"email": f"u{number}@example.com"}}


def magnify_bounce(number: int) -> dict[str, Any]:
    return {
        "account": {"id": "acc_1", "name": "Acme"},
        "user": {"id": f"user_{number}", "name": f"User {number}"},
        "motion": {"id": "00000000-0000-0000-0000-000000000001", "name": "M", "version": "1"},
        "emailEvent": {"templateId": "t", "templateVersion": 1, "type": "magnify_send_email_bounce"},
        "occurredAt": 1640995200000 + number,
    }


def records(app: Any, path: str) -> list[Any]:
    return [r for r in app[SIM_CORE].records if r.path.startswith(path) and r.method == "POST"]


def side_effects(app: Any) -> int:
    return int(app[SIM_CORE].backend.summary()["side_effects"])


async def post_all(service: Service, events: list[dict[str, Any]], batch: int = 50) -> None:
    for start in range(0, len(events), batch):
        async with service.post_webhook(events[start : start + batch]) as response:
            assert response.status == 200


async def test_5xx_and_429_bursts_deliver_everything_once_and_honour_retry_after(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = make_settings(breaker_cooldown_seconds=0.2, retry_max_attempts=30)
    faults = simulators.magicbell_app[SIM_CORE].faults
    faults.update({"error_rate": 0.3, "rate_limit_next": 6, "retry_after": 0.4})
    events = [delete_event(n) for n in range(100)]
    await post_all(service, events)
    await run_worker_burst(settings)

    sent = records(simulators.magicbell_app, "/broadcasts")
    by_key: dict[str, list[Any]] = defaultdict(list)
    for record in sent:
        by_key[record.headers["Idempotency-Key"]].append(record)
    assert len(by_key) == 100
    assert all([r.status for r in tries][-1] == 201 for tries in by_key.values())
    assert side_effects(simulators.magicbell_app) == 100
    assert await statuses(redis, [e["id"] for e in events]) == {"delivered": 100}
    waits = [
        later.at - earlier.at
        for tries in by_key.values()
        for earlier, later in itertools.pairwise(tries)
        if earlier.status == 429
    ]
    assert len(waits) == 6 and min(waits) >= 0.4 - 0.02, waits
    failures = sum(1 for r in sent if r.status >= 500)
    print(f"\n100 events: {len(sent)} requests, {failures} answered 5xx, 6 answered 429; 100 broadcasts")


async def test_a_permanent_400_dead_letters_that_action_only(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = make_settings()
    simulators.magnews_app[SIM_CORE].faults.update({"fail_next": [400]})
    from bridge.events import magnify_envelope

    envelope = magnify_envelope(magnify_bounce(1))
    await ingest(redis, [envelope])
    await run_worker_burst(settings)

    event = await EventReader(redis).get(envelope.id)
    assert event is not None and event.status == "failed"
    by_destination = {action["destination"]: action for action in event.actions.values()}
    assert by_destination["magicbell"]["status"] == "delivered"
    dead = by_destination["magnews"]
    assert dead["status"] == "dead"
    assert dead["last_response"]["status"] == 400
    assert "error" in dead["last_response"]["body"]
    assert [a["outcome"] for a in dead["attempts"]] == ["permanent"]
    assert await redis.zrange("mb:dead", 0, -1) == [envelope.id.encode()]
    assert side_effects(simulators.magicbell_app) == 1


async def test_batch_merge_maps_each_result_to_its_action(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "sync"\nsource = "magnews"\ntypes = ["contacts/update"]\n\n'
        '[[rules.actions]]\nkind = "magnews.merge"\ndatabase = "1"\n'
        '[rules.actions.values]\nemail = "{{ data.email }}"\nstatus = "{{ data.status }}"\n'
    )
    settings = make_settings(rules_file=rules, magnews_batch_wait_ms=300, worker_max_jobs=50)
    events = [
        {"id": f"b{n}", "topic": "contacts/update",
         "data": {"email": f"c{n}@example.com", "status": "bogus" if n % 4 == 0 else "subscribed"}}
        for n in range(20)
    ]  # fmt: skip
    await post_all(service, events)
    await run_worker_burst(settings)

    batches = records(simulators.magnews_app, "/v19/contacts/batchmerge")
    assert records(simulators.magnews_app, "/v19/contacts/merge") == []
    assert sum(len(r.body["contacts"]) for r in batches) == 20
    assert len(batches) <= 2
    store = EventReader(redis)
    for n in range(20):
        event = await store.get(f"b{n}")
        assert event is not None
        [action] = event.actions.values()
        if n % 4 == 0:
            assert (event.status, action["status"]) == ("failed", "dead")
            assert "invalid_value" in action["last_response"]["body"]
        else:
            assert (event.status, action["status"]) == ("delivered", "delivered")
    assert simulators.magnews_app[SIM_CORE].backend.summary()["contacts"] == 15


@pytest.mark.slow
async def test_rate_limit_is_shared_by_workers(
    service: Service, make_settings: SettingsFactory, simulators: Simulators
) -> None:
    settings = make_settings(magicbell_max_rps=10)
    await post_all(service, [delete_event(n) for n in range(20)])
    await asyncio.gather(run_worker_burst(settings), run_worker_burst(settings))
    times = sorted(r.at for r in records(simulators.magicbell_app, "/broadcasts"))
    assert len(times) == 20
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.1 - 0.02, gaps
    print(f"\n20 broadcasts at 10 rps from two workers: {times[-1] - times[0]:.2f}s, min gap {min(gaps):.3f}s")


@pytest.mark.slow
async def test_one_destination_down_does_not_slow_the_other(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = make_settings(breaker_cooldown_seconds=1, retry_base_seconds=0.2, retry_cap_seconds=1,
                             retry_max_attempts=100)  # fmt: skip
    from bridge.events import magnify_envelope

    async def run(label: str, offset: int) -> tuple[float, list[str]]:
        envelopes = [magnify_envelope(magnify_bounce(offset + n)) for n in range(100)]
        before = len(records(simulators.magicbell_app, "/broadcasts"))
        started = time.monotonic()
        await ingest(redis, envelopes)

        async def broadcasts_done() -> bool:
            return len(records(simulators.magicbell_app, "/broadcasts")) - before >= 100

        elapsed = await wait_until(broadcasts_done, timeout=30, step=0.02)
        print(f"\n{label}: 100 MagicBell broadcasts in {elapsed:.2f}s ({100 / elapsed:.0f}/s)")
        return time.monotonic() - started, [e.id for e in envelopes]

    async with running_worker(settings):
        healthy, first = await run("Magnews up", 0)

        await wait_delivered(redis, first, timeout=30)
        simulators.magnews_app[SIM_CORE].faults.update({"down": True})
        degraded, ids = await run("Magnews down", 1000)
        breaker = await redis.hget("mb:gate:magnews:breaker", "open_until")
        assert breaker is not None, "the Magnews circuit opened"
        magnews_calls_while_down = len(records(simulators.magnews_app, "/v19/contacts"))
        simulators.magnews_app[SIM_CORE].faults.update({"down": False})

        recovery = await wait_delivered(redis, ids, timeout=30)
    print(f"Magnews back: the 100 pending merges delivered {recovery:.2f}s later")
    assert side_effects(simulators.magicbell_app) == 200
    merged_users = {
        v["value"] if isinstance(v, dict) else v
        for r in records(simulators.magnews_app, "/v19/contacts/")
        if r.status == 200
        for v in _merged_user_ids(r.body)
    }
    assert len(merged_users) == 200
    # The breaker kept the failing destination from being hammered: far fewer calls than retries.
    assert magnews_calls_while_down < 100
    assert degraded < max(3 * healthy, 2.0)


def _merged_user_ids(body: dict[str, Any]) -> list[str]:
    if "contacts" in body:
        return [v["value"] for c in body["contacts"] for v in c["values"] if v["field"] == "magnify_user_id"]
    return [body["values"]["magnify_user_id"]]


@pytest.mark.slow
async def test_worker_killed_twice_loses_and_repeats_nothing(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    # job_timeout 3 s: arq's in-progress lock lapses 13 s after a kill, then the job runs elsewhere.
    settings = make_settings(job_timeout_seconds=3, http_timeout_seconds=2)
    simulators.magicbell_app[SIM_CORE].faults.update({"latency_ms": 30})
    events = [delete_event(n, "k") for n in range(300)]
    ids = [e["id"] for e in events]
    await post_all(service, events)

    for _ in range(2):
        worker = await start_process("worker", settings)
        await asyncio.sleep(1.5)
        await stop_process(worker, signal.SIGKILL)
    in_flight = await statuses(redis, ids)
    restarted = time.monotonic()
    worker = await start_process("worker", settings)
    try:
        await wait_delivered(redis, ids, timeout=60, step=0.2)
    finally:
        await stop_process(worker)
    recovery = time.monotonic() - restarted
    keys = [r.headers["Idempotency-Key"] for r in records(simulators.magicbell_app, "/broadcasts")]
    print(f"\n300 events, worker SIGKILLed twice; before restart: {in_flight}; "
          f"all delivered {recovery:.1f}s after restart; {len(keys)} requests, {len(set(keys))} keys")  # fmt: skip
    assert len(set(keys)) == 300
    assert side_effects(simulators.magicbell_app) == 300
    assert await redis.zcard("mb:dead") == 0


@pytest.mark.slow
async def test_redis_restart_during_a_run_loses_no_accepted_event(
    make_settings: SettingsFactory, simulators: Simulators, start_service: Any, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    try:
        settings = make_settings(redis_url=server.url)
        service: Service = await start_service(settings)
        accepted: list[str] = []
        refused = 0

        async def send(number: int) -> None:
            nonlocal refused
            event = delete_event(number, "r")
            await asyncio.sleep(number * 0.015)  # spread the sends across the outage
            while True:  # like Magnews: resend until acknowledged
                try:
                    async with service.post_webhook(event) as response:
                        if response.status == 200:
                            accepted.append(event["id"])
                            return
                        assert response.status == 503
                        refused += 1
                except aiohttp.ClientError:
                    refused += 1
                await asyncio.sleep(0.05)

        worker = await start_process("worker", settings)
        try:
            sender = asyncio.gather(*(send(n) for n in range(150)))
            await asyncio.sleep(0.3)
            server.stop()
            await asyncio.sleep(1.5)
            server.start()
            await sender
            client = aioredis.Redis.from_url(server.url)
            try:
                await wait_delivered(client, accepted, timeout=60, step=0.2)
            finally:
                await client.aclose()
        finally:
            await stop_process(worker)
        print(f"\n150 events across a Redis restart: {refused} refusals (503) resent, all 150 delivered")
        assert refused > 0, "the outage overlapped the sends"
        assert sorted(accepted) == sorted(f"r-{n}" for n in range(150))
        assert side_effects(simulators.magicbell_app) == 150
    finally:
        server.stop()


@pytest.mark.slow
async def test_sigterm_drains_running_jobs_and_exits_cleanly(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = make_settings(job_timeout_seconds=5, http_timeout_seconds=2)
    simulators.magicbell_app[SIM_CORE].faults.update({"latency_ms": 300})
    events = [delete_event(n, "t") for n in range(40)]
    ids = [e["id"] for e in events]
    await post_all(service, events)
    worker = await start_process("worker", settings)

    async def some_in_flight() -> bool:
        return (await statuses(redis, ids)).get("delivering", 0) > 0

    await wait_until(some_in_flight, timeout=20, step=0.02)
    started = time.monotonic()
    returncode = await stop_process(worker, signal.SIGTERM, timeout=20)
    drained_in = time.monotonic() - started
    assert returncode == 0
    assert (await statuses(redis, ids)).get("delivering", 0) == 0, "running jobs finished or were handed back"
    worker = await start_process("worker", settings)
    try:
        await wait_delivered(redis, ids, timeout=30, step=0.1)
    finally:
        await stop_process(worker)
    print(f"\nSIGTERM with jobs in flight: exited 0 after {drained_in:.2f}s; all 40 delivered once after restart")
    assert side_effects(simulators.magicbell_app) == 40
