"""Credentials that expire or are revoked: a 401/403 pauses that destination instead of dead-lettering.

The paused destination's events stay queued (deferred, no attempt counted) while the other one keeps
delivering; one probe at a time after a cooldown (or at once from a worker with new credentials)
resumes it. ``/readyz``, ``magbridge check`` and ``magbridge_destination_paused`` show the pause.
Real Redis, real simulators over sockets, real arq workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog

from bridge.cli.check import run_check
from bridge.events import magnify_envelope
from bridge.process_metrics import ProcessMetrics
from bridge.simulators import SIM_CORE, Simulators
from bridge.simulators.magnews_oauth import MAGNEWS_OAUTH, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN
from bridge.store import keys
from bridge.store.scripts import script
from config.settings import Settings
from tests.support.events import magnews_event, magnify_metric
from tests.support.redis_server import free_port
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import set_faults, sim_requests, sim_state
from tests.support.store import event_record, ingest
from tests.support.waiting import statuses, wait_until
from tests.support.workers import run_worker_burst, running_worker
from workers.destinations.senders import credentials
from workers.probes import start_probes

MAGICBELL_PAUSED = keys.gate_paused("magicbell")
MAGNEWS_PAUSED = keys.gate_paused("magnews")
GAUGE = "destination_paused|destination=magicbell"
COOLDOWN = 0.3


def magicbell(simulators: Simulators) -> str:
    return simulators.endpoints.magicbell_base_url


def magnews(simulators: Simulators) -> str:
    return simulators.endpoints.magnews_base_url


async def fields(redis: aioredis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}


async def readyz(service: Service) -> tuple[int, dict[str, Any]]:
    async with service.session.get(f"{service.url}/readyz") as response:
        return response.status, await response.json()


async def check_lines(settings: Settings) -> tuple[int, dict[str, str]]:
    out = io.StringIO()
    status = await run_check(settings, out=out)
    return status, {line.split()[1]: line for line in out.getvalue().splitlines()[:-1]}


async def broadcasts_and_merges(service: Service, redis: aioredis.Redis, count: int) -> tuple[list[str], list[str]]:
    """``count`` Magnews events that each need a MagicBell broadcast, ``count`` Magnify opens that each
    need a Magnews merge (of its own contact); their ids."""
    events = [magnews_event(f"lost-{n}", "contacts/delete", idcontact=1000 + n) for n in range(count)]
    async with service.post_webhook(events) as response:
        assert response.status == 200
    envelopes = [magnify_envelope(magnify_metric("magnify_send_email_open", user=f"user_{n}")) for n in range(count)]
    assert await ingest(redis, envelopes) == [True] * count
    return [event["id"] for event in events], [envelope.id for envelope in envelopes]


# --- the scripts -----------------------------------------------------------------------------------


async def admit(redis: aioredis.Redis, *tokens: str, credential: str = "old", cooldown_ms: int = 5000) -> list[Any]:
    gate_admit = script(redis, "workers.destinations", "gate_admit.lua")
    args = [0, 1000, 100, 60_000, cooldown_ms, credential, *tokens]
    rows = await gate_admit(keys=[*keys.gate("magicbell"), MAGICBELL_PAUSED], args=args)
    return [(int(admitted), reason.decode()) for admitted, _, reason in rows]


async def complete(
    redis: aioredis.Redis, *outcomes: tuple[str, str], credential: str = "old", cooldown_ms: int = 5000
) -> list[int]:
    gate_complete = script(redis, "workers.destinations", "gate_complete.lua")
    args: list[Any] = [5, cooldown_ms, credential, GAUGE]
    for token, outcome in outcomes:
        args += [token, outcome]
    return list(await gate_complete(keys=[*keys.gate("magicbell")[1:], MAGICBELL_PAUSED, keys.GAUGES], args=args))


async def test_a_refusal_pauses_then_one_probe_after_the_cooldown_resumes(redis: aioredis.Redis) -> None:
    assert await admit(redis, "a", "b") == [(1, "ok"), (1, "ok")]
    # Both were in flight: the first refusal pauses (2), the second only renews the pause.
    assert await complete(redis, ("a", "refused:401"), ("b", "refused:401"), cooldown_ms=200) == [2, 0]
    paused = await fields(redis, MAGICBELL_PAUSED)
    assert (paused["status"], paused["credential"]) == ("401", "old")
    assert int(paused["retry_at"]) - int(paused["at"]) == 200
    assert await redis.hget(keys.GAUGES, GAUGE) == b"1"
    assert await redis.exists(keys.gate("magicbell")[2]) == 0, "a refusal is no failure for the breaker"

    assert await admit(redis, "c", "d") == [(0, "paused"), (0, "paused")], "nothing goes out before the cooldown"
    await wait_until(lambda: _past_retry(redis), timeout=2, step=0.05)
    assert await admit(redis, "probe", "e") == [(1, "ok"), (0, "paused")], "one probe at a time"
    assert (await fields(redis, MAGICBELL_PAUSED))["probe"] == "probe"

    # The probe refused again: another cooldown. A success from any request resumes (3).
    assert await complete(redis, ("probe", "refused:401"), cooldown_ms=200) == [0]
    assert "probe" not in await fields(redis, MAGICBELL_PAUSED)
    assert await admit(redis, "f") == [(0, "paused")]
    assert await complete(redis, ("x", "ok")) == [3]
    assert await redis.exists(MAGICBELL_PAUSED) == 0
    assert await redis.hget(keys.GAUGES, GAUGE) == b"0"
    assert await complete(redis, ("y", "ok")) == [0], "resumed once"


async def _past_retry(redis: aioredis.Redis) -> bool:
    retry_at = int((await fields(redis, MAGICBELL_PAUSED))["retry_at"])
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000 >= retry_at


async def test_new_credentials_probe_at_once_and_a_probe_that_proves_nothing_waits(redis: aioredis.Redis) -> None:
    assert await complete(redis, ("a", "refused:403"), credential="old", cooldown_ms=60_000) == [2]
    assert await admit(redis, "same", credential="old") == [(0, "paused")]
    assert await admit(redis, "new", "new2", credential="rotated") == [(1, "ok"), (0, "paused")]
    before = int((await fields(redis, MAGICBELL_PAUSED))["retry_at"])
    # The probe got a 400 (or a transient failure): no proof either way, the pause stays, the next after a cooldown.
    assert await complete(redis, ("new", "rejected"), credential="rotated", cooldown_ms=60_000) == [0]
    paused = await fields(redis, MAGICBELL_PAUSED)
    assert "probe" not in paused and int(paused["retry_at"]) >= before and paused["status"] == "403"
    assert await admit(redis, "new3", credential="rotated") == [(1, "ok")], "new credentials need no cooldown"


# --- end to end ------------------------------------------------------------------------------------


async def test_a_revoked_magicbell_token_pauses_magicbell_until_a_worker_has_a_new_one(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    lost, opens = await broadcasts_and_merges(service, redis, 10)
    revoked = make_settings(magicbell_token="revoked-token", breaker_cooldown_seconds=COOLDOWN)

    with structlog.testing.capture_logs() as logs, stopping_mid_job():
        async with running_worker(revoked, redis):
            # Magnews merges go on while MagicBell is paused.
            await wait_until(lambda: _has(redis, MAGICBELL_PAUSED), timeout=10)
            await wait_until(lambda: _delivered(redis, opens), timeout=10)
            await wait_until(lambda: _refusals(simulators, 3), timeout=10)  # the first, then probes

            status, body = await readyz(service)
            assert status == 200, "a paused destination does not take the receiver out of service"
            check = body["checks"]["magicbell"]
            assert check["ok"] is False and check["blocking"] is False and check["status"] == 401
            [reason] = body["reasons"]
            assert reason.startswith("magicbell: paused, credentials refused (HTTP 401) at ")
            assert "magnews" not in body["checks"]

            code, lines = await check_lines(revoked)
            assert code == 1 and lines["magicbell"].startswith("FAIL")
            assert "HTTP 401" in lines["magicbell"] and "deliveries paused since" in lines["magicbell"]
            code, lines = await check_lines(make_settings())
            assert lines["magicbell"].startswith("WARN") and "deliveries paused since" in lines["magicbell"]

            async with service.session.get(f"{service.url}/metrics") as response:
                metrics = await response.text()
            assert 'magbridge_destination_paused{destination="magicbell",scope="queue"} 1.0' in metrics

            assert await redis.zcard(keys.DEAD_INDEX) == 0
            assert "delivered" not in await statuses(redis, lost), "MagicBell events all wait"
            actions = [action for event_id in lost for action in (await event_record(redis, event_id))["actions"]]
            assert {(action["status"], action["failures"]) for action in actions} == {("deferred", 0)}
            outcomes = [attempt["outcome"] for action in actions for attempt in action["attempts"]]
            assert outcomes and set(outcomes) == {"refused"}, "refusals are recorded, never counted as failures"

    # Probes came one at a time, a cooldown apart: a handful of 401s, not one per event and try.
    refused = [r for r in await sim_requests(magicbell(simulators), "/broadcasts") if r["status"] == 401]
    assert 3 <= len(refused) < 10 + 10, len(refused)
    paused_lines = [line for line in logs if line["event"] == "destination paused, credentials refused"]
    assert len(paused_lines) == 1 and paused_lines[0]["destination"] == "magicbell"

    # A worker with a new token: it probes at once (no cooldown), the probe resumes MagicBell.
    with structlog.testing.capture_logs() as logs:
        await run_worker_burst(make_settings(breaker_cooldown_seconds=60))
    assert [line["destination"] for line in logs if line["event"].startswith("destination resumed")] == ["magicbell"]
    assert await statuses(redis, lost + opens) == {"delivered": 20}
    assert (await sim_state(magicbell(simulators)))["side_effects"] == 10, "each broadcast exactly once"
    assert (await sim_state(magnews(simulators)))["side_effects"] == 10, "each merge exactly once"
    assert await redis.zcard(keys.DEAD_INDEX) == 0
    assert await redis.exists(MAGICBELL_PAUSED) == 0
    status, body = await readyz(service)
    assert "magicbell" not in body["checks"]
    assert not [reason for reason in body["reasons"] if reason.startswith("magicbell")]
    async with service.session.get(f"{service.url}/metrics") as response:
        assert 'magbridge_destination_paused{destination="magicbell",scope="queue"} 0.0' in await response.text()


async def _has(redis: aioredis.Redis, key: str) -> bool:
    return bool(await redis.exists(key))


async def _delivered(redis: aioredis.Redis, ids: list[str]) -> bool:
    return await statuses(redis, ids) == {"delivered": len(ids)}


async def _refusals(simulators: Simulators, count: int) -> bool:
    records = await sim_requests(magicbell(simulators), "/broadcasts")
    return sum(record["status"] == 401 for record in records) >= count


@pytest.mark.parametrize("status", [401, 403])
async def test_magicbell_refusing_then_accepting_again_delivers_everything_once(
    status: int, service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    """The vendor refuses the same token three times (revoked, then re-enabled), then accepts it."""
    lost, opens = await broadcasts_and_merges(service, redis, 10)
    await set_faults(magicbell(simulators), fail_next=[status] * 3)
    settings = make_settings(breaker_cooldown_seconds=0.2, magicbell_max_concurrency=1)
    await run_worker_burst(settings)

    sent = await sim_requests(magicbell(simulators), "/broadcasts")
    # One request at a time while paused: the refusal, two refused probes, the probe that resumed, the rest.
    assert [record["status"] for record in sent] == [status] * 3 + [201] * 10
    refusals = [record["at"] for record in sent[:4]]
    assert all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(refusals)), refusals
    assert (await sim_state(magicbell(simulators)))["side_effects"] == 10
    assert (await sim_state(magnews(simulators)))["side_effects"] == 10
    assert await statuses(redis, lost + opens) == {"delivered": 20}
    assert await redis.zcard(keys.DEAD_INDEX) == 0
    refused = [
        attempt
        for event_id in lost
        for action in (await event_record(redis, event_id))["actions"]
        for attempt in action["attempts"]
        if attempt["outcome"] == "refused"
    ]
    assert len(refused) == 3 and {attempt["status"] for attempt in refused} == {status}


async def test_magnews_refresh_flow_refreshes_before_the_probe_and_resumes(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    """Magnews refuses every access token it grants (they lapse at once), then grants lasting ones."""
    oauth = simulators.magnews_app[MAGNEWS_OAUTH]
    oauth.access_ttl = 0
    settings = make_settings(
        magnews_token=None,
        magnews_client_id=SIM_CLIENT_ID,
        magnews_client_secret=SIM_CLIENT_SECRET,
        magnews_refresh_token=SIM_REFRESH_TOKEN,
        magnews_token_url=simulators.endpoints.magnews_token_url,
        breaker_cooldown_seconds=COOLDOWN,
    )
    lost, opens = await broadcasts_and_merges(service, redis, 5)

    with stopping_mid_job():
        await _deliver_while_magnews_refuses(settings, service, simulators, redis, lost, opens)
    await wait_until(lambda: _delivered(redis, opens), timeout=1)

    assert await redis.exists(MAGNEWS_PAUSED) == 0
    assert await redis.zcard(keys.DEAD_INDEX) == 0
    assert (await sim_state(magnews(simulators)))["side_effects"] == 5
    assert (await sim_state(magicbell(simulators)))["side_effects"] == 5
    records = [(r.path, r.status) for r in simulators.magnews_app[SIM_CORE].records]
    merges = [i for i, (path, _) in enumerate(records) if path.startswith("/v19/contacts/")]
    first_ok = next(i for i in merges if records[i][1] == 200)
    assert records[merges[0]][1] == 401 and records[first_ok - 1] == ("/oauth2/token", 200), records
    assert all(records[i][1] == 200 for i in merges if i > first_ok), "resumed: every merge after it went through"


async def _deliver_while_magnews_refuses(
    settings: Settings,
    service: Service,
    simulators: Simulators,
    redis: aioredis.Redis,
    lost: list[str],
    opens: list[str],
) -> None:
    async with running_worker(settings, redis):
        await wait_until(lambda: _has(redis, MAGNEWS_PAUSED), timeout=10)
        await wait_until(lambda: _delivered(redis, lost), timeout=10)  # MagicBell goes on
        _, body = await readyz(service)
        assert body["reasons"][-1].startswith("magnews: paused, credentials refused (HTTP 401)"), body
        assert await redis.zcard(keys.DEAD_INDEX) == 0
        simulators.magnews_app[MAGNEWS_OAUTH].access_ttl = 600  # the credentials work again
        await wait_until(lambda: _delivered(redis, opens), timeout=10)


@contextlib.contextmanager
def stopping_mid_job() -> Iterator[None]:
    """A worker stopped while paused events keep coming back may cancel a job in flight (arq re-runs it);
    its ``close`` then raises the job's ``CancelledError``."""
    with contextlib.suppress(asyncio.CancelledError):
        yield


async def test_credentials_fingerprint_differs_per_token_and_shows_no_secret(make_settings: SettingsFactory) -> None:
    one, other = credentials(make_settings(), "magicbell"), credentials(make_settings(magicbell_token="x"), "magicbell")
    assert one and other and one != other and "sim-magicbell-token" not in one
    assert credentials(make_settings(magicbell_token=None), "magicbell") == ""
    assert credentials(make_settings(), "magnews") != credentials(make_settings(magnews_token="y"), "magnews")
    assert json.dumps(one).isascii()


async def test_a_workers_own_readyz_names_a_pause_without_failing(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    settings = make_settings(host="127.0.0.1", port=free_port())
    runner = await start_probes(settings, redis, ProcessMetrics(), lambda: True)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{settings.port}/readyz"
            async with session.get(url) as response:
                assert (response.status, (await response.json())["reasons"]) == (200, [])
            await redis.hset(
                MAGNEWS_PAUSED, mapping={"since": 1_700_000_000_000, "at": 1_700_000_000_000, "status": 403}
            )
            async with session.get(url) as response:
                status, body = response.status, await response.json()
    finally:
        await runner.cleanup()
    assert status == 200 and body["status"] == "ready"
    assert body["reasons"] == [
        "magnews: paused, credentials refused (HTTP 403) at 2023-11-14T22:13:20.000Z; its events wait and one probe "
        "request retries after each cooldown (last refusal 2023-11-14T22:13:20.000Z)"
    ]
    assert body["checks"]["magnews"]["blocking"] is False and "credential" not in body["checks"]["magnews"]
