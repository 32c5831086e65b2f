"""Calls of one event-loop iteration served by one round trip: the coalescer alone, then the
destination gate deciding a burst of admissions in one script call exactly as separate calls would."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from bridge.coalesce import Coalescer
from config.errors import DeliveryDeferred
from workers.destinations.limits import DestinationGate, GateLimits


async def test_calls_of_one_iteration_share_one_flush_and_get_their_own_results() -> None:
    flushes: list[list[int]] = []

    async def square_all(items: list[int]) -> list[int]:
        flushes.append(items)
        return [item * item for item in items]

    coalescer: Coalescer[int, int] = Coalescer(square_all)
    assert await asyncio.gather(*(coalescer.submit(n) for n in range(5))) == [0, 1, 4, 9, 16]
    assert flushes == [[0, 1, 2, 3, 4]]
    assert await coalescer.submit(7) == 49  # a lone call waits for nothing but the loop
    assert flushes[-1] == [7]


async def test_max_weight_flushes_early_and_a_failed_flush_fails_every_caller() -> None:
    flushes: list[list[str]] = []

    async def fail_on_boom(items: list[str]) -> list[str]:
        flushes.append(items)
        if "boom" in items:
            raise RuntimeError("store down")
        return items

    coalescer: Coalescer[str, str] = Coalescer(fail_on_boom, max_weight=4, weight=len)
    assert await asyncio.gather(*(coalescer.submit(word) for word in ("ab", "cd", "ef"))) == ["ab", "cd", "ef"]
    assert flushes[:2] == [["ab", "cd"], ["ef"]], "4 characters filled the first flush"
    results = await asyncio.gather(coalescer.submit("x"), coalescer.submit("boom"), return_exceptions=True)
    assert flushes[-1] == ["x", "boom"]
    assert [str(result) for result in results] == ["store down", "store down"]


async def test_a_window_gathers_calls_from_later_iterations() -> None:
    flushes: list[list[int]] = []

    async def record(items: list[int]) -> list[None]:
        flushes.append(items)
        return [None] * len(items)

    coalescer: Coalescer[int, None] = Coalescer(record, window=0.05)

    async def later(n: int) -> None:
        await asyncio.sleep(0.01 * n)
        await coalescer.submit(n)

    await asyncio.gather(*(later(n) for n in range(3)))
    assert flushes == [[0, 1, 2]]


@pytest.mark.parametrize("cap", [1, 3])
async def test_a_burst_of_admissions_is_decided_in_order_like_separate_calls(redis: aioredis.Redis, cap: int) -> None:
    limits = GateLimits(
        max_rps=0, max_concurrency=cap, max_wait=0, breaker_failures=5, breaker_cooldown=30, holder_ttl=30
    )
    gate = DestinationGate(redis, "magicbell", limits)
    outcomes = await asyncio.gather(*(gate._acquire(f"token-{n}") for n in range(5)), return_exceptions=True)
    admitted = [n for n, outcome in enumerate(outcomes) if outcome is None]
    assert admitted == list(range(cap)), "the first callers get the slots, as one call each would"
    assert all(isinstance(outcome, DeliveryDeferred) for outcome in outcomes[cap:])
    assert await redis.zcard("mb:gate:magicbell:holders") == cap


async def test_a_burst_of_failures_opens_the_circuit_once(redis: aioredis.Redis) -> None:
    limits = GateLimits(
        max_rps=0, max_concurrency=10, max_wait=0, breaker_failures=3, breaker_cooldown=30, holder_ttl=30
    )
    gate = DestinationGate(redis, "magnews", limits)
    opened = await asyncio.gather(*(gate._completions.submit((f"t{n}", "fail")) for n in range(5)))
    assert opened == [False, False, True, False, False], "the third failure in a row opens it"
    with pytest.raises(DeliveryDeferred, match="open"):
        await gate._acquire("after")
