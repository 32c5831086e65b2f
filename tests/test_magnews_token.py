"""The Magnews refresh-token flow against the simulator's token endpoint, with a real Redis.

Renewal before expiry and after a 401, one refresh for many concurrent callers (in one process and
across two), the rotated refresh token kept in Redis across restarts, and refusals named clearly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.events import magnify_envelope
from bridge.simulators import SIM_CORE, Simulators
from bridge.simulators.magnews_oauth import MAGNEWS_OAUTH, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN
from bridge.store.reads import EventReader
from config.errors import MagnewsAuthError, PermanentDeliveryError, TransientDeliveryError
from config.settings import Settings
from tests.support.events import magnify_metric
from tests.support.service import SettingsFactory
from tests.support.store import ingest
from tests.support.workers import run_worker_burst
from workers.destinations.magnews import MagnewsClient
from workers.destinations.magnews_auth import (
    ACCESS_TOKEN_KEY,
    REFRESH_TOKEN_KEY,
    RefreshingToken,
    StaticToken,
    keep_fresh,
    magnews_tokens,
)


@pytest.fixture
def refresh_settings(make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis) -> Settings:
    """Settings for the refresh-token flow only (no static token)."""
    return make_settings(
        magnews_token=None,
        magnews_client_id=SIM_CLIENT_ID,
        magnews_client_secret=SIM_CLIENT_SECRET,
        magnews_refresh_token=SIM_REFRESH_TOKEN,
        magnews_token_url=simulators.endpoints.magnews_token_url,
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def oauth(simulators: Simulators) -> Any:
    return simulators.magnews_app[MAGNEWS_OAUTH]


def api_statuses(simulators: Simulators) -> list[tuple[str, int]]:
    """``(path, status)`` of every Magnews request, token endpoint included, in order."""
    return [(record.path, record.status) for record in simulators.magnews_app[SIM_CORE].records]


def provider(
    session: aiohttp.ClientSession, redis: aioredis.Redis, settings: Settings, clock: Callable[[], float] = time.time
) -> RefreshingToken:
    assert settings.magnews_client_secret is not None and settings.magnews_refresh_token is not None
    return RefreshingToken(
        session,
        redis,
        token_url=str(settings.magnews_token_url),
        client_id=str(settings.magnews_client_id),
        client_secret=settings.magnews_client_secret,
        refresh_token=settings.magnews_refresh_token,
        timeout=settings.http_timeout_seconds,
        clock=clock,
    )


def client(session: aiohttp.ClientSession, settings: Settings, tokens: RefreshingToken) -> MagnewsClient:
    return MagnewsClient(session, str(settings.magnews_base_url), None, timeout=5, tokens=tokens)


async def stored_refresh_token(redis: aioredis.Redis) -> str:
    raw = await redis.hget(REFRESH_TOKEN_KEY, "token")
    assert isinstance(raw, bytes)
    return raw.decode()


async def test_settings_choose_the_provider(
    refresh_settings: Settings, make_settings: SettingsFactory, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    assert isinstance(magnews_tokens(session, make_settings(), redis), StaticToken)
    assert isinstance(magnews_tokens(session, refresh_settings, redis), RefreshingToken)
    with pytest.raises(Exception, match="MAGBRIDGE_MAGNEWS_TOKEN_URL"):
        make_settings(magnews_client_id="x", magnews_client_secret="y", magnews_refresh_token="z")


async def test_refresh_flow_authenticates_and_stores_the_rotated_refresh_token(
    refresh_settings: Settings, simulators: Simulators, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    magnews = MagnewsClient.from_settings(session, refresh_settings, redis=redis)
    await magnews.ping()

    sim = oauth(simulators)
    assert sim.grants == 1
    assert SIM_REFRESH_TOKEN not in sim.refresh_tokens, "the simulator rotated the first refresh token"
    assert sim.refresh_tokens == {await stored_refresh_token(redis)}, "the rotated one is in Redis"
    [(token_path, token_status), (ping_path, ping_status)] = api_statuses(simulators)
    assert (token_path, token_status, ping_path, ping_status) == ("/oauth2/token", 200, "/v19/account/userinfo", 200)
    token_request = simulators.magnews_app[SIM_CORE].records[0]
    assert "grant_type=refresh_token" in token_request.body


async def test_renews_shortly_before_expiry_without_a_401(
    refresh_settings: Settings, simulators: Simulators, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    now = [time.time()]
    tokens = provider(session, redis, refresh_settings, clock=lambda: now[0])
    magnews = client(session, refresh_settings, tokens)
    await magnews.ping()
    first = await tokens.bearer()
    now[0] += 3600 - 61  # a minute and a second before the simulator's hour runs out: still used
    await magnews.ping()
    assert await tokens.bearer() == first
    now[0] += 2  # within the last minute: renewed before the API could refuse it
    await magnews.ping()

    assert await tokens.bearer() != first
    assert oauth(simulators).grants == 2
    assert [status for _, status in api_statuses(simulators)] == [200] * 5, "no request was refused"


async def test_a_401_refreshes_once_and_retries_once(
    refresh_settings: Settings, simulators: Simulators, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    tokens = provider(session, redis, refresh_settings)
    magnews = client(session, refresh_settings, tokens)
    await magnews.ping()
    oauth(simulators).expire_access_tokens()  # the provider revoked it early: only a 401 tells

    await magnews.ping()

    assert api_statuses(simulators) == [
        ("/oauth2/token", 200),
        ("/v19/account/userinfo", 200),
        ("/v19/account/userinfo", 401),
        ("/oauth2/token", 200),
        ("/v19/account/userinfo", 200),
    ]
    assert tokens.refreshes == 2


async def test_a_second_401_is_not_retried_again(
    refresh_settings: Settings, simulators: Simulators, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    magnews = client(session, refresh_settings, provider(session, redis, refresh_settings))
    oauth(simulators).access_ttl = 0  # every token is dead on arrival
    with pytest.raises(PermanentDeliveryError) as caught:
        await magnews.ping()
    assert caught.value.status == 401
    assert [status for _, status in api_statuses(simulators)] == [200, 401, 200, 401]


async def test_concurrent_callers_in_two_processes_share_one_refresh(
    refresh_settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    async with aiohttp.ClientSession() as first_session, aiohttp.ClientSession() as second_session:
        first = client(first_session, refresh_settings, provider(first_session, redis, refresh_settings))
        second = client(second_session, refresh_settings, provider(second_session, redis, refresh_settings))
        await asyncio.gather(*(magnews.ping() for magnews in [first, second] * 15))
        assert oauth(simulators).grants == 1

        # Every token is revoked at once: all 30 calls see a 401, and still only one refresh happens
        # (a second one would present a rotated, invalid refresh token and fail).
        oauth(simulators).expire_access_tokens()
        await asyncio.gather(*(magnews.ping() for magnews in [first, second] * 15))
    assert oauth(simulators).grants == 2
    assert oauth(simulators).refusals == 0


async def test_the_rotated_refresh_token_survives_a_restart(
    refresh_settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    async with aiohttp.ClientSession() as session:
        await client(session, refresh_settings, provider(session, redis, refresh_settings)).ping()
    oauth(simulators).expire_access_tokens()
    await redis.delete(ACCESS_TOKEN_KEY)  # as after the access token's own expiry
    assert SIM_REFRESH_TOKEN not in oauth(simulators).refresh_tokens, "the setting's token is spent"

    # A new process: nothing in memory, the same settings (whose refresh token no longer works).
    async with aiohttp.ClientSession() as session:
        tokens = provider(session, redis, refresh_settings)
        await client(session, refresh_settings, tokens).ping()
    assert tokens.refreshes == 1
    assert oauth(simulators).refusals == 0
    assert oauth(simulators).refresh_tokens == {await stored_refresh_token(redis)}


async def test_a_new_refresh_token_in_the_settings_replaces_the_stored_one(
    refresh_settings: Settings, simulators: Simulators, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    await client(session, refresh_settings, provider(session, redis, refresh_settings)).ping()
    sim = oauth(simulators)
    sim.refresh_tokens = {"operator-issued-refresh-token"}  # the old chain was revoked; a person got a new one
    await redis.delete(ACCESS_TOKEN_KEY)

    renewed = Settings(
        **{**refresh_settings.model_dump(), "magnews_refresh_token": "operator-issued-refresh-token"}, _env_file=None
    )
    async with aiohttp.ClientSession() as other:
        await client(other, renewed, provider(other, redis, renewed)).ping()
    assert sim.refusals == 0
    assert await stored_refresh_token(redis) in sim.refresh_tokens


async def test_a_refused_refresh_token_is_transient_named_and_not_hammered(
    refresh_settings: Settings, simulators: Simulators, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    oauth(simulators).refresh_tokens.clear()
    magnews = client(session, refresh_settings, provider(session, redis, refresh_settings))
    for _ in range(3):
        with pytest.raises(MagnewsAuthError) as caught:
            await magnews.ping()
    error = caught.value
    assert isinstance(error, TransientDeliveryError), "deliveries wait and retry while a person fixes it"
    assert "invalid_grant" in str(error) and "MAGBRIDGE_MAGNEWS_REFRESH_TOKEN" in str(error)
    assert SIM_REFRESH_TOKEN not in str(error) and SIM_CLIENT_SECRET not in str(error)
    assert oauth(simulators).refusals == 1, "refusals are remembered for a few seconds"


@pytest.mark.slow
async def test_the_keeper_renews_while_nothing_is_delivered(
    refresh_settings: Settings, simulators: Simulators, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    oauth(simulators).access_ttl = 0.3
    tokens = provider(session, redis, refresh_settings)
    keeper = asyncio.create_task(keep_fresh(tokens, min_sleep=0.05))
    await asyncio.sleep(1.0)
    keeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await keeper
    assert oauth(simulators).grants >= 2, "renewed at least once before the first token lapsed"
    assert oauth(simulators).refusals == 0
    assert oauth(simulators).refresh_tokens == {await stored_refresh_token(redis)}


async def test_worker_delivers_merges_with_the_refresh_flow(
    refresh_settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    oauth(simulators).access_ttl = 600
    envelope = magnify_envelope(magnify_metric("magnify_send_email_open"))
    assert await ingest(redis, [envelope]) == [True]
    await run_worker_burst(refresh_settings)

    merges = [r for r in simulators.magnews_app[SIM_CORE].records if r.path == "/v19/contacts/merge"]
    assert [merge.status for merge in merges] == [200]
    assert merges[0].headers["Authorization"].startswith("Bearer sim-magnews-access-")
    event = await EventReader(redis).get(envelope.id)
    assert event is not None and event.status == "delivered"
