"""Each destination's gate as the workers share it in Redis (``keys.gate``, ``keys.gate_paused``), read in
one round trip: its rate limit, requests in flight, circuit breaker and credential pause.

The states, as ``workers.destinations.limits`` decides them: *paused* (our credentials were refused,
one probe at a time after each cooldown), *open* (the breaker defers every request until
``open_until``), *half-open* (the cooldown is over and one probe request decides), *closed*
(delivering; ``failures`` counts transient failures in a row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from bridge.store import keys
from bridge.store.records import text
from bridge.web.health import pause_check
from config.settings import Settings

__all__ = ["DestinationState", "read_destinations"]


@dataclass(frozen=True, slots=True)
class DestinationState:
    name: str
    max_rps: float  # 0: no limit
    max_concurrency: int
    in_flight: int
    next_slot_ms: int | None  # the rate limit's next free slot, when one is reserved
    failures: int
    open_until_ms: int | None
    probing: bool
    pause: dict[str, Any] | None  # ``bridge.web.health.pause_check``: since, status, retry_at_ms, reason

    def state(self, now_ms: int) -> str:
        if self.pause is not None:
            return "paused"
        if self.open_until_ms is not None:
            return "open" if self.open_until_ms > now_ms else "half-open"
        return "closed"


async def read_destinations(redis: aioredis.Redis, settings: Settings, now_ms: int) -> list[DestinationState]:
    async with redis.pipeline(transaction=False) as pipe:
        for name in keys.DESTINATIONS:
            rate, holders, breaker, probe = keys.gate(name)
            pipe.get(rate)
            pipe.zcount(holders, now_ms, "+inf")  # holders past their expiry are dead workers' slots
            pipe.hgetall(breaker)
            pipe.exists(probe)
            pipe.hgetall(keys.gate_paused(name))
        replies = await pipe.execute()
    states = []
    for position, name in enumerate(keys.DESTINATIONS):
        rate, in_flight, breaker, probe, paused = replies[position * 5 : position * 5 + 5]
        fields = {text(k): text(v) for k, v in breaker.items()}
        slot = int(text(rate)) if rate is not None and text(rate).isdigit() else None
        open_until = fields.get("open_until", "")
        max_rps, max_concurrency = settings.destination_limits(name)
        states.append(
            DestinationState(
                name=name,
                max_rps=max_rps,
                max_concurrency=max_concurrency,
                in_flight=int(in_flight),
                next_slot_ms=slot if slot is not None and slot > now_ms else None,
                failures=int(fields.get("failures") or 0),
                open_until_ms=int(open_until) if open_until.isdigit() else None,
                probing=bool(probe),
                pause=pause_check(name, paused),
            )
        )
    return states
