"""Per-destination admission shared by every worker process through Redis.

For each remote API one ``DestinationGate`` enforces, in a Lua script that decides each request:

- a **circuit breaker**: after ``breaker_failures`` transient failures in a row the destination is
  open for ``breaker_cooldown`` seconds, and requests are deferred without touching the network;
  then one probe at a time is let through (half-open); a success closes it, a failure re-opens it;
- a **concurrency cap**: at most ``max_concurrency`` requests in flight (holders expire, so a
  killed worker cannot leak a slot);
- a **rate limit** (GCRA): slots ``1 / max_rps`` apart; a request may reserve a slot up to
  ``max_wait`` seconds ahead and sleep until it, otherwise it is deferred.

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from bridge.coalesce import Coalescer
from config.errors import DeliveryDeferred, DeliveryError, TransientDeliveryError

__all__ = ["DestinationGate", "GateLimits"]

_log = structlog.get_logger("magbridge.limits")

# Admissions asked for in one event-loop iteration are decided in one call, in order, exactly as
# one call each would decide them (``bridge.coalesce``).
# KEYS: rate, holders, breaker, probe. ARGV: interval_ms, max_wait_ms, max_concurrency, holder_ttl_ms,
# cooldown_ms, then one token per request. Returns {admitted (0/1), wait_ms, reason} per token.
_ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local results = {}
local open_until = tonumber(redis.call('HGET', KEYS[3], 'open_until') or '0')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[2])
for i = 6, #ARGV do
  local token = ARGV[i]
  if open_until > now then
    results[#results + 1] = {0, open_until - now, 'open'}
  elseif open_until > 0 and not redis.call('SET', KEYS[4], token, 'NX', 'PX', ARGV[5]) then
    results[#results + 1] = {0, 200, 'probing'}
  elseif held >= tonumber(ARGV[3]) then
    results[#results + 1] = {0, 10, 'busy'}
  else
    local wait = 0
    local refused = false
    if interval > 0 then
      local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
      wait = start - now
      if wait > tonumber(ARGV[2]) then
        refused = true
      else
        redis.call('SET', KEYS[1], start + interval, 'PX', wait + interval + 1000)
      end
    end
    if refused then
      results[#results + 1] = {0, wait, 'rate'}
    else
      redis.call('ZADD', KEYS[2], now + wait + tonumber(ARGV[4]), token)
      held = held + 1
      results[#results + 1] = {1, wait, 'ok'}
    end
  end
end
return results
"""

# Completions of one event-loop iteration, in one call. KEYS: holders, breaker, probe.
# ARGV: threshold, cooldown_ms, then token and outcome (ok|fail|none) per request.
# Returns 1 per completion that opened the circuit, else 0.
_COMPLETE_LUA = """
local results = {}
for i = 3, #ARGV, 2 do
  local opened = 0
  redis.call('ZREM', KEYS[1], ARGV[i])
  if ARGV[i + 1] == 'ok' then
    if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DEL', KEYS[2], KEYS[3]) end
  elseif ARGV[i + 1] == 'fail' then
    local failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
    local was_open = tonumber(redis.call('HGET', KEYS[2], 'open_until') or '0') > 0
    if failures >= tonumber(ARGV[1]) or was_open then
      local t = redis.call('TIME')
      local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      redis.call('HSET', KEYS[2], 'open_until', now + tonumber(ARGV[2]))
      redis.call('DEL', KEYS[3])
      if not was_open then opened = 1 end
    end
  end
  results[#results + 1] = opened
end
return results
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
        self._admit_script = redis.register_script(_ADMIT_LUA)
        self._complete_script = redis.register_script(_COMPLETE_LUA)
        self._admissions: Coalescer[str, tuple[int, int, str]] = Coalescer(self._admit_many)
        # Holder tokens: unique across processes by the prefix, and cheaper than a uuid per request.
        self._token_prefix = uuid.uuid4().hex[:16] + ":"
        self._tokens = itertools.count()
        # Answers arrive spread out; a completion waits up to 2 ms to share its call with others.
        self._completions: Coalescer[tuple[str, str], bool] = Coalescer(self._complete_many, window=0.002)

    async def _admit_many(self, tokens: list[str]) -> list[tuple[int, int, str]]:
        limits = self.limits
        interval_ms = int(1000 / limits.max_rps) if limits.max_rps > 0 else 0
        args: list[str | int] = [
            interval_ms, int(limits.max_wait * 1000), limits.max_concurrency, int(limits.holder_ttl * 1000),
            int(limits.breaker_cooldown * 1000), *tokens,
        ]  # fmt: skip
        rows = await self._admit_script(keys=self._admit_keys, args=args)
        return [(int(admitted), int(wait_ms), reason.decode()) for admitted, wait_ms, reason in rows]

    async def _complete_many(self, completions: list[tuple[str, str]]) -> list[bool]:
        args: list[str | int] = [self.limits.breaker_failures, int(self.limits.breaker_cooldown * 1000)]
        for token, outcome in completions:
            args += [token, outcome]
        return [bool(opened) for opened in await self._complete_script(keys=self._complete_keys, args=args)]

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
            if await self._completions.post((token, outcome)):  # queued even if we are cancelled
                _log.warning("circuit opened", destination=self.destination, cooldown=self.limits.breaker_cooldown)
