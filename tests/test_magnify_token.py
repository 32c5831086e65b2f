"""The Magnify token manager: cached, refreshed before expiry, refreshed once on 401, shared by callers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import aiohttp
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from bridge.simulators import SIM_CORE, Simulators, run_simulators
from config.errors import MagnifyApiError, MagnifyAuthError
from tests.support.magnify import api_requests, backend, magnify_settings, open_poller
from tests.support.service import SettingsFactory
from workers.magnify.auth import AUTH_STATE_KEY, READ_SCOPE, AttemptListener, TokenAttempt, TokenManager
from workers.magnify.client import MagnifyClient, RetryPolicy


def token_manager(
    session: aiohttp.ClientSession,
    sims: Simulators,
    secret: str = "sim-secret",
    *,
    clock: Callable[[], float] = time.monotonic,
    on_attempt: AttemptListener | None = None,
) -> TokenManager:
    url = sims.endpoints.magnify_token_url
    return TokenManager(session, url, "sim-client", SecretStr(secret), timeout=5, clock=clock, on_attempt=on_attempt)


async def test_token_is_requested_as_documented_cached_and_shared(simulators: Simulators) -> None:
    async with aiohttp.ClientSession() as session:
        tokens = token_manager(session, simulators)
        values = await asyncio.gather(*(tokens.token() for _ in range(20)))
        again = await tokens.token()
    assert len(set(values)) == 1 and again == values[0]
    assert tokens.fetches == 1
    [request] = api_requests(simulators, "/oauth2/token")
    form = parse_qs(request.body) if isinstance(request.body, str) else {}
    assert form == {
        "grant_type": ["client_credentials"],
        "client_id": ["sim-client"],
        "client_secret": ["sim-secret"],
        "scope": [READ_SCOPE],
    }
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_token_is_refreshed_shortly_before_it_expires(simulators: Simulators) -> None:
    now = [1000.0]
    async with aiohttp.ClientSession() as session:
        tokens = token_manager(session, simulators, clock=lambda: now[0])
        first = await tokens.token()
        # expires_in is 3600: the token is kept until a minute before that, then replaced.
        now[0] += 3600 - 61
        assert await tokens.token() == first
        now[0] += 2
        second = await tokens.token()
    assert second != first and tokens.fetches == 2


async def test_short_lived_token_is_refreshed_a_tenth_of_its_life_early() -> None:
    async with run_simulators(magnify={"token_ttl_seconds": 10}) as sims, aiohttp.ClientSession() as session:
        now = [0.0]
        tokens = token_manager(session, sims, clock=lambda: now[0])
        first = await tokens.token()
        now[0] = 8.9
        assert await tokens.token() == first
        now[0] = 9.1
        assert await tokens.token() != first
        assert tokens.fetches == 2


async def test_401_refreshes_once_and_retries(simulators: Simulators) -> None:
    async with aiohttp.ClientSession() as session:
        tokens = token_manager(session, simulators)
        client = MagnifyClient(session, simulators.endpoints.magnify_base_url, tokens, timeout=5)
        await client.list_motions()
        backend(simulators).oauth.tokens.reset()  # revoked server-side before our clock says it expires
        page = await client.list_motions()
    assert page.total == 20
    assert tokens.fetches == 2
    assert [record.status for record in api_requests(simulators, "/motions")] == [200, 401, 200]


async def test_concurrent_401s_share_one_refresh(simulators: Simulators) -> None:
    async with aiohttp.ClientSession() as session:
        tokens = token_manager(session, simulators)
        client = MagnifyClient(session, simulators.endpoints.magnify_base_url, tokens, timeout=5)
        await client.list_motions()
        backend(simulators).oauth.tokens.reset()
        pages = await asyncio.gather(*(client.list_motions() for _ in range(10)))
    assert all(page.total == 20 for page in pages)
    assert tokens.fetches == 2  # the first token, and one refresh for all ten 401s


async def test_a_second_401_is_an_error_not_a_loop() -> None:
    # Tokens that expire at once: the refreshed token is refused too, and the call gives up.
    async with run_simulators(magnify={"token_ttl_seconds": 0}) as sims, aiohttp.ClientSession() as session:
        tokens = token_manager(session, sims)
        client = MagnifyClient(session, sims.endpoints.magnify_base_url, tokens, timeout=5, retry=RetryPolicy(5))
        with pytest.raises(MagnifyApiError) as caught:
            await client.list_motions()
        assert caught.value.status == 401
        assert caught.value.detail == "OAuth 2.0 token has expired"
        assert tokens.fetches == 2
        assert len(api_requests(sims, "/motions")) == 2


async def test_wrong_credentials_are_a_clear_error_without_the_secret(simulators: Simulators) -> None:
    attempts: list[TokenAttempt] = []

    async def listener(attempt: TokenAttempt) -> None:
        attempts.append(attempt)

    async with aiohttp.ClientSession() as session:
        tokens = token_manager(session, simulators, secret="not-the-secret", on_attempt=listener)
        with pytest.raises(MagnifyAuthError) as caught:
            await tokens.token()
    error = caught.value
    assert (error.status, error.transient) == (401, False)
    assert "invalid_client" in str(error) and "not-the-secret" not in str(error)
    assert attempts == [TokenAttempt(ok=False, error=str(error), status=401)]


async def test_token_endpoint_outage_is_transient(simulators: Simulators) -> None:
    simulators.magnify_app[SIM_CORE].faults.update({"fail_next": [503]})
    async with aiohttp.ClientSession() as session:
        tokens = token_manager(session, simulators)
        with pytest.raises(MagnifyAuthError) as caught:
            await tokens.token()
        assert caught.value.transient and caught.value.status == 503
        assert await tokens.token()  # the next attempt works


async def test_auth_state_is_published_for_readiness(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    wrong = magnify_settings(make_settings, simulators, magnify_client_secret="wrong-secret")
    async with open_poller(wrong, redis) as poller:
        report = await poller.poll_once()
    assert report.outcome == "error" and "invalid_client" in report.error
    state = json.loads(await redis.get(AUTH_STATE_KEY))
    assert state["ok"] is False and "invalid_client" in state["error"] and state["at"] > 0
    assert "wrong-secret" not in state["error"]

    async with open_poller(magnify_settings(make_settings, simulators), redis) as poller:
        assert (await poller.poll_once()).outcome == "ok"
    state = json.loads(await redis.get(AUTH_STATE_KEY))
    assert (state["ok"], state["error"]) == (True, "")
