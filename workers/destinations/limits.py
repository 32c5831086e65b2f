"""Per-destination admission shared by every worker process through Redis.

For each remote API one ``DestinationGate`` enforces, in a Lua script that decides each request:

- a **circuit breaker**: after ``breaker_failures`` transient failures in a row the destination is
  open for ``breaker_cooldown`` seconds, and requests are deferred without touching the network;
  then one probe at a time is let through (half-open); a success closes it, a failure re-opens it;
- a **concurrency cap**: at most ``max_concurrency`` requests in flight (holders expire, so a
  killed worker cannot leak a slot);
- a **rate limit** (GCRA): slots ``1 / max_rps`` apart; a request may reserve a slot up to
  ``max_wait`` seconds ahead and sleep until it, otherwise it is deferred.
- a **pause** when the destination refuses our credentials (401 or 403: a Magnews access token that
  expired, a revoked MagicBell JWT): the refused request and every later one are deferred, not
  dead-lettered, and no attempt is counted; after ``breaker_cooldown`` one request at a time goes out
  as a probe, and the first success resumes the destination. A worker whose credential differs from
  the one refused (a new token after a restart) probes at once. The pause lives in
  ``keys.gate_paused``, shared by every worker, with the gauge ``destination_paused{destination}``
  (1/0) set in the same script; a line is logged when it pauses and when it resumes.

Admissions (and completions) asked for in one event-loop iteration share one script call, which
decides them in order as separate calls would. A deferral raises ``DeliveryDeferred``: the job is
rescheduled without holding a worker slot, so a slow or failing destination never clogs deliveries
to the other one. Time comes from Redis
(``TIME``), so workers with skewed clocks share one schedule.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from bridge.coalesce import Coalescer
from bridge.store import keys
from bridge.store.scripts import script
from bridge.store.stats import series_name
from config.errors import (
    CredentialsRefused,
    DeliveryDeferred,
    DeliveryError,
    DestinationPaused,
    TransientDeliveryError,
)

__all__ = ["PAUSED_GAUGE", "DestinationGate", "GateLimits"]

_log = structlog.get_logger("magbridge.limits")

PAUSED_GAUGE = "destination_paused"
"""Gauge in ``keys.GAUGES``, labelled by destination: 1 while paused, 0 once resumed."""
_OPENED, _PAUSED, _RESUMED = 1, 2, 3


@dataclass(frozen=True, slots=True)
class GateLimits:
    max_rps: float  # 0 = no rate limit
    max_concurrency: int
    max_wait: float
    breaker_failures: int
    breaker_cooldown: float
    holder_ttl: float  # a slot held longer than this (a dead worker) is freed


class DestinationGate:
    def __init__(
        self,
        redis: aioredis.Redis,
        destination: str,
        limits: GateLimits,
        *,
        credential: Callable[[], str] = lambda: "",
    ):
        """``credential``: a fingerprint of the credential the next request would send (never the
        secret), "" when unknown; a pause remembers the one refused."""
        self.destination = destination
        self.limits = limits
        self._credential = credential
        gate_keys = keys.gate(destination)
        self._admit_keys = [*gate_keys, keys.gate_paused(destination)]
        self._complete_keys = [*gate_keys[1:], keys.gate_paused(destination), keys.GAUGES]
        self._gauge_field = series_name(PAUSED_GAUGE, {"destination": destination})
        self._admit_script = script(redis, __package__, "gate_admit.lua")
        self._complete_script = script(redis, __package__, "gate_complete.lua")
        self._admissions: Coalescer[str, tuple[int, int, str]] = Coalescer(self._admit_many)
        # Holder tokens: unique across processes by the prefix, and cheaper than a uuid per request.
        self._token_prefix = uuid.uuid4().hex[:16] + ":"
        self._tokens = itertools.count()
        # Answers arrive spread out; a completion waits up to 2 ms to share its call with others.
        self._completions: Coalescer[tuple[str, str], int] = Coalescer(self._complete_many, window=0.002)

    async def _admit_many(self, tokens: list[str]) -> list[tuple[int, int, str]]:
        limits = self.limits
        interval_ms = int(1000 / limits.max_rps) if limits.max_rps > 0 else 0
        args: list[str | int] = [
            interval_ms, int(limits.max_wait * 1000), limits.max_concurrency, int(limits.holder_ttl * 1000),
            int(limits.breaker_cooldown * 1000), self._credential(), *tokens,
        ]  # fmt: skip
        rows = await self._admit_script(keys=self._admit_keys, args=args)
        return [(int(admitted), int(wait_ms), reason.decode()) for admitted, wait_ms, reason in rows]

    async def _complete_many(self, completions: list[tuple[str, str]]) -> list[int]:
        args: list[str | int] = [
            self.limits.breaker_failures, int(self.limits.breaker_cooldown * 1000), self._credential(),
            self._gauge_field,
        ]  # fmt: skip
        for token, outcome in completions:
            args += [token, outcome]
        return [int(result) for result in await self._complete_script(keys=self._complete_keys, args=args)]

    async def _acquire(self, token: str) -> None:
        limits = self.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.max_wait
        while True:
            admitted, wait_ms, reason = await self._admissions.submit(token)
            wait = wait_ms / 1000
            if admitted:
                if wait > 0:
                    await asyncio.sleep(wait)
                return
            if reason == "busy" and loop.time() + wait < deadline:
                await asyncio.sleep(wait)
                continue
            # Spread the deferred jobs so they do not all come back in the same instant.
            retry_after = max(wait, limits.max_wait) * (1 + random.random())
            raise DeliveryDeferred(f"{self.destination}: {reason}", retry_after=retry_after)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Admit one request (or raise ``DeliveryDeferred``) and record how it went for the breaker."""
        token = f"{self._token_prefix}{next(self._tokens)}"
        await self._acquire(token)
        outcome = "none"
        refused: CredentialsRefused | None = None
        try:
            yield
            outcome = "ok"
        except TransientDeliveryError:
            outcome = "fail"
            raise
        except CredentialsRefused as exc:
            outcome = f"refused:{exc.status or 0}"  # the destination is up, our credentials are not accepted
            refused = exc
        except DeliveryError:
            outcome = "rejected"  # a 4xx answer still proves the destination is up
            raise
        finally:
            result = await self._completions.post((token, outcome))  # queued even if we are cancelled
            self._report(result, outcome)
        if refused is not None:
            # Not a failure of the action: it waits for the probe that finds the credentials accepted.
            retry_after = self.limits.breaker_cooldown * (1 + random.random() / 2)
            reason = f"{self.destination}: paused, credentials refused (HTTP {refused.status})"
            raise DestinationPaused(reason, retry_after=retry_after, status=refused.status, body=refused.body) from (
                refused
            )

    def _report(self, result: int, outcome: str) -> None:
        """One log line when this completion opened the circuit, paused or resumed the destination."""
        if result == _OPENED:
            _log.warning("circuit opened", destination=self.destination, cooldown=self.limits.breaker_cooldown)
        elif result == _PAUSED:
            _log.error(
                "destination paused, credentials refused",
                destination=self.destination,
                status=int(outcome.partition(":")[2]),
                probe_every=self.limits.breaker_cooldown,
            )
        elif result == _RESUMED:
            _log.warning("destination resumed, credentials accepted", destination=self.destination)
