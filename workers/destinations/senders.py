"""How each destination's requests leave this process: through its gate, and for Magnews, the contact
lookup, the latest-wins order and the batcher (``magnews_merge``).

Each gate knows a fingerprint of its destination's credentials as this process has them (settings
are read at start), so a paused destination is probed at once by a worker started with new ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from pydantic import SecretStr

from bridge.process_metrics import WorkerSeries
from config.errors import MergeOutcomeUnknown
from config.settings import Settings
from workers.delivery import Sender
from workers.destinations.contact_lookup import ContactLookup
from workers.destinations.contact_order import ContactOrder
from workers.destinations.http import ApiResponse
from workers.destinations.limits import DestinationGate, GateLimits
from workers.destinations.magicbell import MagicBellClient
from workers.destinations.magnews import MagnewsClient
from workers.destinations.magnews_auth import MagnewsTokens
from workers.destinations.magnews_merge import MagnewsMerger
from workers.destinations.merge_batcher import MergeBatcher
from workers.destinations.merge_readback import MergeReadBack
from workers.mapping import Request

__all__ = ["Senders", "build_senders", "credential_fingerprint", "credentials"]


@dataclass(slots=True)
class Senders:
    by_destination: dict[str, Sender]
    batcher: MergeBatcher
    magnews_tokens: MagnewsTokens | None = None  # the worker keeps refreshable ones fresh

    async def close(self) -> None:
        await self.batcher.close()


def credential_fingerprint(*parts: SecretStr | str | None) -> str:
    """A short one-way name for a set of credentials ("" when none is set); never the secret."""
    values = [part.get_secret_value() if isinstance(part, SecretStr) else part for part in parts]
    if not any(values):
        return ""
    return hashlib.sha256("\n".join(value or "" for value in values).encode()).hexdigest()[:16]


def credentials(settings: Settings, destination: str) -> str:
    """The fingerprint of ``destination``'s credentials in ``settings``: the MagicBell token, the static
    Magnews token, or the Magnews refresh-token flow's client and (initial) refresh token."""
    if destination == "magicbell":
        return credential_fingerprint(settings.magicbell_token)
    if settings.magnews_refresh_enabled:
        return credential_fingerprint(
            settings.magnews_client_id, settings.magnews_client_secret, settings.magnews_refresh_token
        )
    return credential_fingerprint(settings.magnews_token)


def _gate(redis: aioredis.Redis, settings: Settings, destination: str) -> DestinationGate:
    rps, concurrency = settings.destination_limits(destination)
    limits = GateLimits(
        max_rps=rps,
        max_concurrency=concurrency,
        max_wait=settings.limiter_max_wait_seconds,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown=settings.breaker_cooldown_seconds,
        holder_ttl=settings.job_timeout_seconds,
    )
    credential = credentials(settings, destination)
    return DestinationGate(redis, destination, limits, credential=lambda: credential)


def build_senders(
    redis: aioredis.Redis, session: aiohttp.ClientSession, settings: Settings, *, metrics: WorkerSeries | None = None
) -> Senders:
    """``metrics``: where the Magnews contact lookups are counted (none: not counted)."""
    magicbell = MagicBellClient.from_settings(session, settings)
    magnews = MagnewsClient.from_settings(session, settings, redis=redis)
    magicbell_gate = _gate(redis, settings, "magicbell")
    magnews_gate = _gate(redis, settings, "magnews")

    async def broadcast(request: Request, *, read_back: bool = False) -> ApiResponse:
        # A read-back and the create it may spare share one slot of the gate.
        async with magicbell_gate.slot():
            return await magicbell.create_broadcast(request.body, idempotency_key=request.key, read_back=read_back)

    # An answer without outcome is a 2xx: Magnews is up, so it is no failure for the breaker (raised
    # outside the slot); the merger reads the contact back.
    async def merge_one(values: dict[str, Any], options: dict[str, Any], key: str) -> ApiResponse:
        unknown: MergeOutcomeUnknown | None = None
        async with magnews_gate.slot():
            try:
                return await magnews.merge_contact(values, options, idempotency_key=key)
            except MergeOutcomeUnknown as exc:
                unknown = exc
        raise unknown

    async def merge_many(
        database: int, contacts: list[dict[str, Any]], options: dict[str, Any], key: str
    ) -> list[ApiResponse | Exception]:
        unknown: MergeOutcomeUnknown | None = None
        async with magnews_gate.slot():
            try:
                return await magnews.batch_merge(database, contacts, options, key)
            except MergeOutcomeUnknown as exc:
                unknown = exc
        raise unknown

    async def query_contacts(query: str) -> list[dict[str, Any]]:
        async with magnews_gate.slot():
            return await magnews.query_contacts(query)

    batcher = MergeBatcher(
        merge_one, merge_many, max_size=settings.magnews_batch_size, max_wait=settings.magnews_batch_wait_ms / 1000
    )
    lookup = ContactLookup(
        redis,
        query_contacts,
        ttl_seconds=settings.magnews_contact_cache_seconds,
        miss_ttl_seconds=settings.magnews_contact_miss_seconds,
        counted=(lambda source, result: metrics.magnews_lookups.labels(source, result).inc()) if metrics else None,
    )
    # Latest-wins marks live as long as the events they order; a holder's lease as long as a job.
    order = ContactOrder(redis, ttl_seconds=settings.retention_seconds, lease_seconds=settings.job_timeout_seconds)
    merge = MagnewsMerger(batcher, lookup, order, MergeReadBack(query_contacts))
    return Senders({"magicbell": broadcast, "magnews": merge}, batcher, magnews.tokens)
