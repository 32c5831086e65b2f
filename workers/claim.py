"""Claim many arq jobs in one Redis round trip.

arq starts jobs one at a time, with three round trips each (WATCH the in-progress key, read it and
the queue score, MULTI/EXEC) and the event loop busy in between: that caps a worker near a few
hundred jobs per second whatever the jobs do. This script makes the same decision for a whole poll
at once and with the same keys, so workers using it and plain arq workers still exclude each other:
a job is claimed only if it is due and no in-progress key exists, and claiming sets that key.

Delivery jobs are run by the worker in batches rather than by arq's ``run_job``, so the script also
counts their try in arq's retry key, as ``run_job`` would (``job_try``), and moves each claimed one
out of the due window until its claim lapses; the batch's closing script
(``EventStore.queue_settle``) does what arq's ``finish_job`` would.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from arq.constants import in_progress_key_prefix, retry_key_prefix

__all__ = ["ClaimedJob", "JobClaimer"]

# ARGV: queue name, in-progress TTL (ms), most to claim, prefix of the jobs whose try to count, job ids.
# Returns, flattened, id, score and try (0 where not counted) of each claimed job.
_CLAIM_LUA = f"""
local queue = ARGV[1]
local counted = ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local claimed = {{}}
local limit = tonumber(ARGV[3])
for i = 5, #ARGV do
  if #claimed >= 3 * limit then break end
  local id = ARGV[i]
  local score = redis.call('ZSCORE', queue, id)
  if score and tonumber(score) <= now and redis.call('EXISTS', '{in_progress_key_prefix}' .. id) == 0 then
    redis.call('SET', '{in_progress_key_prefix}' .. id, '1', 'PX', ARGV[2])
    local try = 0
    if string.sub(id, 1, #counted) == counted then
      try = redis.call('INCR', '{retry_key_prefix}' .. id)
      redis.call('EXPIRE', '{retry_key_prefix}' .. id, 88400)
      -- Out of the due window while claimed, so polls read only jobs that can be claimed; due again
      -- when the claim lapses, should this worker die with it.
      redis.call('ZADD', queue, now + tonumber(ARGV[2]), id)
    end
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = score
    claimed[#claimed + 1] = try
  end
end
return claimed
"""


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    job_id: str
    score: int  # when it was due (ms)
    job_try: int  # 0 for a job whose try arq counts itself


class JobClaimer:
    def __init__(self, redis: aioredis.Redis, queue_name: str, in_progress_ms: int, *, counted_prefix: str):
        self._script = redis.register_script(_CLAIM_LUA)
        self._queue_name = queue_name
        self._in_progress_ms = in_progress_ms
        self._counted_prefix = counted_prefix

    async def claim(self, job_ids: list[str], limit: int) -> list[ClaimedJob]:
        """Up to ``limit`` jobs among ``job_ids`` that this worker now owns."""
        if not job_ids or limit <= 0:
            return []
        args: list[str | int] = [self._queue_name, self._in_progress_ms, limit, self._counted_prefix, *job_ids]
        flat = await self._script(args=args)
        return [ClaimedJob(_text(flat[i]), int(float(flat[i + 1])), int(flat[i + 2])) for i in range(0, len(flat), 3)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
