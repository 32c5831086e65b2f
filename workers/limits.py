"""Per-destination admission shared by every worker process through Redis.

For each remote API one ``DestinationGate`` enforces, in one Lua script per request:

- a **circuit breaker**: after ``breaker_failures`` transient failures in a row the destination is
  open for ``breaker_cooldown`` seconds, and requests are deferred without touching the network;
  then one probe at a time is let through (half-open); a success closes it, a failure re-opens it;
- a **concurrency cap**: at most ``max_concurrency`` requests in flight (holders expire, so a
  killed worker cannot leak a slot);
- a **rate limit** (GCRA): slots ``1 / max_rps`` apart; a request may reserve a slot up to
  ``max_wait`` seconds ahead and sleep until it, otherwise it is deferred.

A deferral raises ``DeliveryDeferred``: the job is rescheduled without holding a worker slot, so a
slow or failing destination never clogs deliveries to the other one. Time comes from Redis
(``TIME``), so workers with skewed clocks share one schedule.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from config.errors import DeliveryDeferred, DeliveryError, TransientDeliveryError

__all__ = ["DestinationGate", "GateLimits"]

_log = structlog.get_logger("magbridge.limits")

# KEYS: rate, holders, breaker, probe. ARGV: interval_ms, max_wait_ms, max_concurrency, holder_ttl_ms,
# token, cooldown_ms. Returns {admitted (0/1), wait_ms, reason}.
_ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[3], 'open_until') or '0')
if open_until > now then return {0, open_until - now, 'open'} end
if open_until > 0 and not redis.call('SET', KEYS[4], ARGV[5], 'NX', 'PX', ARGV[6]) then
  return {0, 200, 'probing'}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return {0, 10, 'busy'} end
local wait = 0
local interval = tonumber(ARGV[1])
if interval > 0 then
  local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
  wait = start - now
  if wait > tonumber(ARGV[2]) then return {0, wait, 'rate'} end
  redis.call('SET', KEYS[1], start + interval, 'PX', wait + interval + 1000)
end
redis.call('ZADD', KEYS[2], now + wait + tonumber(ARGV[4]), ARGV[5])
return {1, wait, 'ok'}
"""

# KEYS: holders, breaker, probe. ARGV: token, outcome (ok|fail|none), threshold, cooldown_ms.
# Returns 1 when this call opened the circuit.
_COMPLETE_LUA = """
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] == 'ok' then
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DEL', KEYS[2], KEYS[3]) end
elseif ARGV[2] == 'fail' then
  local failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
  local was_open = tonumber(redis.call('HGET', KEYS[2], 'open_until') or '0') > 0
  if failures >= tonumber(ARGV[3]) or was_open then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('HSET', KEYS[2], 'open_until', now + tonumber(ARGV[4]))
    redis.call('DEL', KEYS[3])
    if not was_open then return 1 end
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class GateLimits:
    max_rps: float  # 0 = no rate limit
    max_concurrency: int
    max_wait: float
    breaker_failures: int
    breaker_cooldown: float
    holder_ttl: float  # a slot held longer than this (a dead worker) is freed


class DestinationGate:
    def __init__(self, redis: aioredis.Redis, destination: str, limits: GateLimits):
        self.destination = destination
        self.limits = limits
        prefix = f"mb:gate:{destination}"
        self._admit_keys = [f"{prefix}:rate", f"{prefix}:holders", f"{prefix}:breaker", f"{prefix}:probe"]
        self._complete_keys = self._admit_keys[1:]
        self._admit = redis.register_script(_ADMIT_LUA)
        self._complete = redis.register_script(_COMPLETE_LUA)

    async def _acquire(self, token: str) -> None:
        limits = self.limits
        interval_ms = int(1000 / limits.max_rps) if limits.max_rps > 0 else 0
        args: list[str | int] = [
            interval_ms, int(limits.max_wait * 1000), limits.max_concurrency, int(limits.holder_ttl * 1000),
            token, int(limits.breaker_cooldown * 1000),
        ]  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.max_wait
        while True:
            admitted, wait_ms, reason = await self._admit(keys=self._admit_keys, args=args)
            wait = int(wait_ms) / 1000
            if admitted:
                if wait > 0:
                    await asyncio.sleep(wait)
                return
            reason = reason.decode() if isinstance(reason, bytes) else str(reason)
            if reason == "busy" and loop.time() + wait < deadline:
                await asyncio.sleep(wait)
                continue
            # Spread the deferred jobs so they do not all come back in the same instant.
            retry_after = max(wait, limits.max_wait) * (1 + random.random())
            raise DeliveryDeferred(f"{self.destination}: {reason}", retry_after=retry_after)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Admit one request (or raise ``DeliveryDeferred``) and record how it went for the breaker."""
        token = uuid.uuid4().hex
        await self._acquire(token)
        outcome = "none"
        try:
            yield
            outcome = "ok"
        except TransientDeliveryError:
            outcome = "fail"
            raise
        except DeliveryError:
            outcome = "ok"  # a 4xx answer still proves the destination is up
            raise
        finally:
            args: list[str | int] = [
                token,
                outcome,
                self.limits.breaker_failures,
                int(self.limits.breaker_cooldown * 1000),
            ]
            opened = await asyncio.shield(self._complete(keys=self._complete_keys, args=args))
            if opened:
                _log.warning("circuit opened", destination=self.destination, cooldown=self.limits.breaker_cooldown)
