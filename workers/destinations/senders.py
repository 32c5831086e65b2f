"""How each destination's requests leave this process: through its gate, and for Magnews, the batcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from config.settings import Settings
from workers.delivery import Sender
from workers.destinations.http import ApiResponse
from workers.destinations.limits import DestinationGate, GateLimits
from workers.destinations.magicbell import MagicBellClient
from workers.destinations.magnews import MagnewsClient
from workers.destinations.magnews_auth import MagnewsTokens
from workers.destinations.merge_batcher import MergeBatcher
from workers.mapping import Request

__all__ = ["Senders", "build_senders"]


@dataclass(slots=True)
class Senders:
    by_destination: dict[str, Sender]
    batcher: MergeBatcher
    magnews_tokens: MagnewsTokens | None = None  # the worker keeps refreshable ones fresh

    async def close(self) -> None:
        await self.batcher.close()


def _gate(redis: aioredis.Redis, settings: Settings, destination: str, rps: float, concurrency: int) -> DestinationGate:
    limits = GateLimits(
        max_rps=rps,
        max_concurrency=concurrency,
        max_wait=settings.limiter_max_wait_seconds,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown=settings.breaker_cooldown_seconds,
        holder_ttl=settings.job_timeout_seconds,
    )
    return DestinationGate(redis, destination, limits)


def build_senders(redis: aioredis.Redis, session: aiohttp.ClientSession, settings: Settings) -> Senders:
    magicbell = MagicBellClient.from_settings(session, settings)
    magnews = MagnewsClient.from_settings(session, settings, redis=redis)
    magicbell_gate = _gate(redis, settings, "magicbell", settings.magicbell_max_rps, settings.magicbell_max_concurrency)
    magnews_gate = _gate(redis, settings, "magnews", settings.magnews_max_rps, settings.magnews_max_concurrency)

    async def broadcast(request: Request) -> ApiResponse:
        async with magicbell_gate.slot():
            return await magicbell.create_broadcast(request.body, idempotency_key=request.key)

    async def merge_one(values: dict[str, Any], options: dict[str, Any], key: str) -> ApiResponse:
        async with magnews_gate.slot():
            return await magnews.merge_contact(values, options, idempotency_key=key)

    async def merge_many(
        database: int, contacts: list[dict[str, Any]], options: dict[str, Any], key: str
    ) -> list[ApiResponse | Exception]:
        async with magnews_gate.slot():
            return await magnews.batch_merge(database, contacts, options, key)

    batcher = MergeBatcher(
        merge_one, merge_many, max_size=settings.magnews_batch_size, max_wait=settings.magnews_batch_wait_ms / 1000
    )

    async def merge(request: Request) -> ApiResponse:
        return await batcher.merge(request.body["values"], request.body["options"], request.key)

    return Senders({"magicbell": broadcast, "magnews": merge}, batcher, magnews.tokens)
