"""Claim many arq jobs in one Redis round trip.

arq starts jobs one at a time, with three round trips each (WATCH the in-progress key, read it and
the queue score, MULTI/EXEC) and the event loop busy in between: that caps a worker near a few
hundred jobs per second whatever the jobs do. This script makes the same decision for a whole poll
at once and with the same keys, so workers using it and plain arq workers still exclude each other:
a job is claimed only if it is due and no in-progress key exists, and claiming sets that key.
"""

from __future__ import annotations

import redis.asyncio as aioredis

__all__ = ["JobClaimer"]

# ARGV: queue name, in-progress TTL (ms), most to claim, job ids. Returns claimed ids and scores, flattened.
_CLAIM_LUA = """
local queue = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local claimed = {}
local limit = tonumber(ARGV[3])
for i = 4, #ARGV do
  if #claimed >= 2 * limit then break end
  local id = ARGV[i]
  local score = redis.call('ZSCORE', queue, id)
  if score and tonumber(score) <= now and redis.call('EXISTS', 'arq:in-progress:' .. id) == 0 then
    redis.call('SET', 'arq:in-progress:' .. id, '1', 'PX', ARGV[2])
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = score
  end
end
return claimed
"""


class JobClaimer:
    def __init__(self, redis: aioredis.Redis, queue_name: str, in_progress_ms: int):
        self._script = redis.register_script(_CLAIM_LUA)
        self._queue_name = queue_name
        self._in_progress_ms = in_progress_ms

    async def claim(self, job_ids: list[str], limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` jobs among ``job_ids`` that this worker now owns, with their queue scores."""
        if not job_ids or limit <= 0:
            return []
        flat = await self._script(args=[self._queue_name, self._in_progress_ms, limit, *job_ids])
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return [(_text(job_id), int(float(score))) for job_id, score in pairs]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
