"""The Magnify client: paging inside the documented limits, motion ids, typed errors, retries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr

from bridge.simulators import SIM_CORE, Simulators, run_simulators
from config.errors import InvalidMotionId, MagnifyApiError
from tests.support.magnify import api_requests, backend
from workers.magnify.auth import TokenManager
from workers.magnify.client import MagnifyClient, MagnifyLimits, RetryPolicy, parse_motion_id

UUID = "0f0e0d0c-0b0a-4908-8706-050403020100"


def make_client(
    session: aiohttp.ClientSession,
    sims: Simulators,
    *,
    limits: MagnifyLimits | None = None,
    retry: RetryPolicy | None = None,
) -> MagnifyClient:
    tokens = TokenManager(session, sims.endpoints.magnify_token_url, "sim-client", SecretStr("sim-secret"), timeout=5)
    policy = retry or RetryPolicy(attempts=4, base_seconds=0.01, cap_seconds=2)
    return MagnifyClient(session, sims.endpoints.magnify_base_url, tokens, timeout=5, retry=policy, limits=limits)


@pytest.fixture
async def client(simulators: Simulators) -> AsyncIterator[MagnifyClient]:
    async with aiohttp.ClientSession() as session:
        yield make_client(session, simulators)


def test_motion_ids_accept_the_listed_prefix_and_check_the_documented_pattern() -> None:
    assert parse_motion_id(f"motion_{UUID}") == UUID
    assert parse_motion_id(UUID) == UUID
    for bad in ("motion_123", UUID.upper(), f"motion_motion_{UUID}", f"{UUID} ", ""):
        with pytest.raises(InvalidMotionId):
            parse_motion_id(bad)


async def test_motions_list_with_state_filter_and_bare_ids(client: MagnifyClient, simulators: Simulators) -> None:
    listed = await client.all_motions("EXECUTING")
    executing = [motion.id for motion in backend(simulators).data.motions if motion.state == "EXECUTING"]
    assert [motion.id for motion in listed.motions] == executing
    assert listed.total == len(executing) and listed.unreachable == 0
    assert all(motion.state == "EXECUTING" for motion in listed.motions)
    [request] = api_requests(simulators, "/motions")
    assert request.query == {"size": "1000", "from": "0", "state": "EXECUTING"}
    motion = await client.get_motion(f"motion_{executing[0]}")
    assert motion.id == executing[0] and motion.state == "EXECUTING"


async def test_motion_paging_stays_inside_the_limits() -> None:
    # Pages of 40 to see several; `from` may not pass 100, so 140 of 150 motions can be listed.
    async with run_simulators(magnify={"motions": 150, "metrics_per_motion": 1}) as sims:
        async with aiohttp.ClientSession() as session:
            client = make_client(session, sims, limits=MagnifyLimits(motions_size_max=40))
            listed = await client.all_motions()
        queries = [(record.query["from"], record.query["size"]) for record in api_requests(sims, "/motions")]
        assert queries == [("0", "40"), ("40", "40"), ("80", "40"), ("100", "40")]
        assert (listed.total, len(listed.motions), listed.unreachable) == (150, 140, 10)
        assert [motion.id for motion in listed.motions] == [motion.id for motion in backend(sims).data.motions][:140]


async def test_metrics_pages_and_no_metrics_yet(client: MagnifyClient, simulators: Simulators) -> None:
    motions = backend(simulators).data.motions
    with_metrics = next(motion for motion in motions if motion.metrics)
    page = await client.email_metrics(f"motion_{with_metrics.id}", start=40, size=100)
    assert page.total == 50 and page.metrics == with_metrics.metrics[40:]
    draft = next(motion for motion in motions if motion.state == "DRAFT")
    empty = await client.email_metrics(draft.id)
    assert (empty.total, empty.metrics) == (0, [])
    assert api_requests(simulators, "/email-metrics")[-1].status == 404


@pytest.mark.parametrize(
    ("call", "instance", "errors"),
    [
        ("size", "/v1/partner/motions", ["size: should be >= 1"]),
        ("state", "/v1/partner/motions", ["state: must be equal to one of the allowed values"]),
        ("from", "/v1/partner/motions", ["from: should be <= 100"]),
        ("metrics-size", "/v1/partner/motions/{id}/email-metrics", ["size: should be <= 100"]),
        ("metrics-from", "/v1/partner/motions/{id}/email-metrics", ["from: should be <= 99900"]),
    ],
)
async def test_validation_errors_are_typed(
    client: MagnifyClient, simulators: Simulators, call: str, instance: str, errors: list[str]
) -> None:
    motion_id = backend(simulators).data.motions[0].id
    with pytest.raises(MagnifyApiError) as caught:
        if call == "size":
            await client.list_motions(size=0)
        elif call == "state":
            await client.list_motions(state="RUNNING")
        elif call == "from":
            await client.list_motions(start=101)
        elif call == "metrics-size":
            await client.email_metrics(motion_id, size=101)
        else:
            await client.email_metrics(motion_id, start=99_901)
    error = caught.value
    assert (error.status, error.type) == (400, "/errors/motions")
    assert error.message.endswith("validation failed")
    assert error.detail == "Invalid query parameters provided"
    assert error.instance == instance.format(id=motion_id)
    assert error.validation_errors == errors
    assert not error.transient
    assert len(api_requests(simulators, "/motions")) == 1  # a 400 is not retried


async def test_bad_motion_id_from_the_api_is_typed_and_caught_before_sending(
    client: MagnifyClient, simulators: Simulators
) -> None:
    with pytest.raises(MagnifyApiError) as caught:
        await client.get_json("/motions/motion_123", endpoint="motions")
    error = caught.value
    assert (error.status, error.detail, error.instance) == (
        400,
        "Invalid motion ID format",
        "/v1/partner/motions/motion_123",
    )
    assert error.validation_errors == [
        'motionId: should match pattern "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"'
    ]
    before = len(api_requests(simulators))
    with pytest.raises(InvalidMotionId):
        await client.get_motion("motion_123")
    with pytest.raises(InvalidMotionId):
        await client.email_metrics("123")
    assert len(api_requests(simulators)) == before
    with pytest.raises(MagnifyApiError) as missing:
        await client.get_motion(UUID)
    assert missing.value.status == 404 and UUID in missing.value.detail


async def test_429_waits_for_retry_after(client: MagnifyClient, simulators: Simulators) -> None:
    await client.tokens.token()  # the faults below are for the API call, not the token endpoint
    simulators.magnify_app[SIM_CORE].faults.update({"rate_limit_next": 1, "retry_after": 0.4})
    await client.list_motions()
    records = api_requests(simulators, "/motions")
    assert [record.status for record in records] == [429, 200]
    assert records[1].at - records[0].at >= 0.39


async def test_5xx_and_dropped_connections_are_retried_then_given_up(simulators: Simulators) -> None:
    faults = simulators.magnify_app[SIM_CORE].faults
    async with aiohttp.ClientSession() as session:
        client = make_client(session, simulators, retry=RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05))
        await client.tokens.token()
        faults.update({"fail_next": [500, 503]})
        assert (await client.list_motions()).total == 20
        faults.update({"fail_next": [502, 500, 503, 500]})
        with pytest.raises(MagnifyApiError) as caught:
            await client.list_motions()
        assert caught.value.status == 503 and caught.value.transient
        faults.update({"fail_next": [], "drop_rate": 1.0})
        with pytest.raises(MagnifyApiError) as dropped:
            await client.list_motions()
        assert dropped.value.status is None and dropped.value.transient
    statuses = [record.status for record in api_requests(simulators, "/motions")]
    assert statuses[:6] == [500, 503, 200, 502, 500, 503]


async def test_retries_stop_at_the_deadline(client: MagnifyClient, simulators: Simulators) -> None:
    await client.tokens.token()
    simulators.magnify_app[SIM_CORE].faults.update({"rate_limit_next": 5, "retry_after": 5})
    started = time.monotonic()
    with pytest.raises(MagnifyApiError) as caught:
        await client.list_motions(deadline=time.monotonic() + 1)
    assert caught.value.status == 429 and caught.value.retry_after == 5
    assert time.monotonic() - started < 1


async def test_a_token_endpoint_hiccup_is_retried_like_the_api(client: MagnifyClient, simulators: Simulators) -> None:
    simulators.magnify_app[SIM_CORE].faults.update({"fail_next": [503], "retry_after": 0.05})
    assert (await client.list_motions()).total == 20
    assert [record.status for record in api_requests(simulators, "/oauth2/token")] == [503, 200]
