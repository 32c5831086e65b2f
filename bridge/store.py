"""The event store in Redis: events, their actions, dead letters and counters.

Keys (one Redis database per bridge; the scripts name keys they compute, so Redis Cluster is not
supported):

    mb:event:{id}     hash   envelope fields, ``payload`` (raw JSON), ``status``, ``generation``,
                             ``replays`` (JSON list: when, how and by whom it was replayed)
    mb:actions:{id}   hash   action key -> JSON record of the action, its attempts and outcome
    mb:events         zset   event ids by receipt time (ms): listing, time ranges, retention
    mb:dead           zset   ids of events with an action that failed for good, by time (ms)
    mb:pending        zset   ids of events not yet final, by last (re)queue time: the sweeper's list
    mb:stats          hash   counters shared by every process (received, duplicates, ...), see
                             ``bridge/stats.py``; ingest counts ``received`` and ``duplicates`` both
                             as totals and by ``source`` and bounded ``type`` (``bridge/labels.py``)

An event's own key is its dedupe marker: it lives for the retention window, so the same id again
within that window is acknowledged as a duplicate. Dead letters are kept (no expiry) until replayed.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from arq.constants import in_progress_key_prefix, retry_key_prefix
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from bridge.events import Envelope, canonical_json
from bridge.labels import event_type_label
from bridge.queue import DELIVER_JOB_PREFIX, JOB_KEY_PREFIX, QUEUE_NAME, deliver_job_id, deliver_job_record
from bridge.stats import series_name
from config.errors import StoreUnavailable

__all__ = ["EVENT_STATUSES", "EventStore", "ReplayOutcome", "RunOutcome", "StoredEvent", "event_key", "now_ms"]

EVENT_STATUSES = ("queued", "delivering", "retrying", "delivered", "failed", "ignored")
_EVENTS_INDEX = "mb:events"
_DEAD_INDEX = "mb:dead"
_PENDING_INDEX = "mb:pending"
_STATS = "mb:stats"

# Store each new event, index it and queue its delivery job, atomically; count duplicates.
# ARGV: now_ms, retention_ms, queue, then 7 values per event (the last: the bounded type label).
_INGEST_LUA = """
local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local queue = ARGV[3]
local results = {}
local accepted = 0
for i = 4, #ARGV, 7 do
  local id = ARGV[i]
  local key = 'mb:event:' .. id
  local series = '|source=' .. ARGV[i + 1] .. ',type=' .. ARGV[i + 6]
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', 'mb:stats', 'duplicates' .. series, 1)
    results[#results + 1] = 0
  else
    redis.call('HINCRBY', 'mb:stats', 'received' .. series, 1)
    redis.call('HSET', key, 'source', ARGV[i + 1], 'type', ARGV[i + 2], 'occurred_at', ARGV[i + 3],
      'payload', ARGV[i + 4], 'received_at', now, 'updated_at', now, 'status', 'queued',
      'generation', 0, 'runs', 0)
    redis.call('PEXPIRE', key, retention)
    redis.call('ZADD', 'mb:events', now, id)
    redis.call('ZADD', 'mb:pending', now, id)
    local job_id = 'deliver:' .. id
    redis.call('SET', 'arq:job:' .. job_id, ARGV[i + 5])
    redis.call('ZADD', queue, now, job_id)
    results[#results + 1] = 1
    accepted = accepted + 1
  end
end
if accepted > 0 then redis.call('HINCRBY', 'mb:stats', 'received', accepted) end
if #results > accepted then redis.call('HINCRBY', 'mb:stats', 'duplicates', #results - accepted) end
redis.call('ZREMRANGEBYSCORE', 'mb:events', '-inf', now - retention)
return results
"""

# Queue delivery jobs for stored events (replays, sweeps) unless one is queued already.
_ENQUEUE_LUA = """
local now = tonumber(ARGV[1])
local queue = ARGV[2]
local results = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local job_id = 'deliver:' .. id
  if redis.call('EXISTS', 'mb:event:' .. id) == 0 then
    results[#results + 1] = -1
  elseif redis.call('EXISTS', 'arq:job:' .. job_id) == 1 then
    results[#results + 1] = 0
  else
    redis.call('SET', 'arq:job:' .. job_id, ARGV[i + 1])
    redis.call('ZADD', queue, now, job_id)
    redis.call('HSET', 'mb:event:' .. id, 'status', 'queued', 'updated_at', now)
    redis.call('ZADD', 'mb:pending', now, id)
    results[#results + 1] = 1
  end
end
return results
"""

# Start the delivery runs of a batch: mark each stored event as delivering, count the run, and
# return its fields and its action records ({} for an event that is gone). ARGV: now_ms, event ids.
_BEGIN_LUA = """
local now = ARGV[1]
local runs = {}
for i = 2, #ARGV do
  local key = 'mb:event:' .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'status', 'delivering', 'updated_at', now)
    redis.call('HINCRBY', key, 'runs', 1)
    runs[#runs + 1] = {redis.call('HGETALL', key), redis.call('HGETALL', 'mb:actions:' .. ARGV[i])}
  else
    runs[#runs + 1] = {}
  end
end
return runs
"""

# Record the outcomes of a batch of delivery runs, and the queue's bookkeeping of their jobs when
# ARGV[4] names the queue (the worker ran them itself; arq's own ``run_job`` does it otherwise):
# done jobs leave, the others are due again at their retry time or, interrupted, at once.
# ARGV: now_ms, retention_ms, ledger TTL (s), queue or '', count of ledger entries, then key and
# entry of each, then per run: event id, status, error, job ('done' | 'retry' | 'again' | 'gone'),
# retry at (ms), count of action records, then key and record of each.
_SETTLE_LUA = f"""
local now = ARGV[1]
local retention = ARGV[2]
local queue = ARGV[4]
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  redis.call('SET', ARGV[i], ARGV[i + 1], 'EX', ARGV[3])
  i = i + 2
end
while i <= #ARGV do
  local id, status, err, job, retry_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local count = tonumber(ARGV[i + 5])
  i = i + 6
  local event, actions, job_id = 'mb:event:' .. id, 'mb:actions:' .. id, '{DELIVER_JOB_PREFIX}' .. id
  if count > 0 then
    redis.call('HSET', actions, unpack(ARGV, i, i + 2 * count - 1))
    i = i + 2 * count
  end
  if job == 'done' then
    redis.call('HSET', event, 'status', status, 'updated_at', now, 'error', err)
    redis.call('ZREM', '{_PENDING_INDEX}', id)
    if status == 'failed' then
      redis.call('ZADD', '{_DEAD_INDEX}', now, id)
      redis.call('PERSIST', event)
      redis.call('PERSIST', actions)
    else
      redis.call('ZREM', '{_DEAD_INDEX}', id)
      redis.call('PEXPIRE', event, retention)
      redis.call('PEXPIRE', actions, retention)
    end
    redis.call('HINCRBY', '{_STATS}', 'events_finished|status=' .. status, 1)
  elseif job == 'gone' then
    redis.call('ZREM', '{_PENDING_INDEX}', id)
  else
    redis.call('HSET', event, 'status', status, 'updated_at', now)
    if count > 0 then redis.call('PEXPIRE', actions, retention) end
  end
  if queue ~= '' then
    if job == 'retry' then redis.call('ZADD', queue, retry_at, job_id) end
    if job == 'again' then redis.call('ZADD', queue, now, job_id) end  -- due at once, not at the claim's lapse
    if job == 'done' or job == 'gone' then
      redis.call('ZREM', queue, job_id)
      redis.call('DEL', '{JOB_KEY_PREFIX}' .. job_id, '{retry_key_prefix}' .. job_id)
    end
    redis.call('DEL', '{in_progress_key_prefix}' .. job_id)
  end
end
return 1
"""

# One page of a sorted set, newest first, after a cursor (member and score of the last one seen).
# KEYS[1]: the zset; ARGV: max, min, count, after member ('' for the first page), after score.
# The cursor's own rank keeps ties in order; if that member is gone, its score is the boundary.
_PAGE_LUA = """
local count = tonumber(ARGV[3])
if ARGV[4] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[4])
  if rank then
    return redis.call('ZREVRANGE', KEYS[1], rank + 1, rank + count, 'WITHSCORES')
  end
  return redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[5], ARGV[2], 'WITHSCORES', 'LIMIT', 0, count)
end
return redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES', 'LIMIT', 0, count)
"""
_HEADER_FIELDS = ("source", "type", "occurred_at", "received_at", "updated_at", "status", "generation", "runs", "error")
_KEPT_REPLAYS = 50
_REPLAY_TRIES = 5


_T = TypeVar("_T")


async def _resolve(value: Awaitable[_T] | _T) -> _T:
    """redis-py types its async commands as ``Awaitable[T] | T``; they are always awaitables here."""
    return await value if inspect.isawaitable(value) else value


def now_ms() -> int:
    return int(time.time() * 1000)


def event_key(event_id: str) -> str:
    return f"mb:event:{event_id}"


def _actions_key(event_id: str) -> str:
    return f"mb:actions:{event_id}"


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a delivery run came to. ``job``: ``done`` (``status`` is final), ``retry`` (due again at
    ``retry_at_ms``), ``again`` (interrupted: runs again as queued), ``gone`` (the event expired)."""

    event_id: str
    status: str
    job: str
    error: str = ""
    retry_at_ms: int = 0
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay did, or would do, to one event: ``status`` is ``replayed``, ``already-queued``
    (a delivery job is queued or running), ``not-found`` or ``busy`` (it kept changing under us)."""

    event_id: str
    status: str
    previous_status: str = ""
    reset_actions: int = 0
    generation: int = 0

    def entry(self) -> dict[str, Any]:
        """What the event's ``replays`` history keeps of this outcome."""
        return {
            "previous_status": self.previous_status,
            "generation": self.generation,
            "reset_actions": self.reset_actions,
        }


@dataclass(slots=True)
class StoredEvent:
    """An event as read back from Redis."""

    id: str
    source: str
    type: str
    occurred_at: str
    received_at: int
    updated_at: int
    status: str
    generation: int
    runs: int
    error: str
    payload: dict[str, Any]
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)
    replays: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "status": self.status,
            "occurred_at": self.occurred_at,
            "received_at": self.received_at,
            "updated_at": self.updated_at,
            "error": self.error,
        }


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _payload_json(payload: dict[str, Any]) -> str:
    try:
        return orjson.dumps(payload).decode()  # several times faster than json for every event stored
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, which JSON allows and orjson does not
        return canonical_json(payload)


def _stored_event(
    event_id: str, raw: dict[bytes, bytes] | dict[str, str], raw_actions: dict[bytes, bytes] | dict[str, str]
) -> StoredEvent | None:
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return StoredEvent(
        id=event_id,
        source=fields.get("source", ""),
        type=fields.get("type", ""),
        occurred_at=fields.get("occurred_at", ""),
        received_at=int(fields.get("received_at") or 0),
        updated_at=int(fields.get("updated_at") or 0),
        status=fields.get("status", ""),
        generation=int(fields.get("generation") or 0),
        runs=int(fields.get("runs") or 0),
        error=fields.get("error", ""),
        payload=json.loads(fields.get("payload") or "{}"),
        actions={_text(k): json.loads(v) for k, v in raw_actions.items()},
        replays=json.loads(fields.get("replays") or "[]"),
    )


class EventStore:
    """Typed access to the event keys above; every Redis failure becomes ``StoreUnavailable``."""

    def __init__(self, redis: aioredis.Redis, *, retention_seconds: int):
        self.redis = redis
        self.retention_ms = retention_seconds * 1000
        self._ingest = redis.register_script(_INGEST_LUA)
        self._enqueue = redis.register_script(_ENQUEUE_LUA)
        self._page = redis.register_script(_PAGE_LUA)
        self._begin = redis.register_script(_BEGIN_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)

    async def ingest(self, envelopes: list[Envelope]) -> list[bool]:
        """Store, index and queue each envelope not seen before; ``True`` per envelope that was new."""
        stamp = now_ms()
        args: list[str | int] = [stamp, self.retention_ms, QUEUE_NAME]
        for envelope in envelopes:
            args += [
                envelope.id,
                envelope.source,
                envelope.type,
                envelope.occurred_at,
                _payload_json(envelope.payload),
                deliver_job_record(envelope.id, stamp),
                event_type_label(envelope.source, envelope.type),
            ]
        try:
            results = await self._ingest(args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return [bool(flag) for flag in results]

    async def enqueue(self, event_ids: Iterable[str]) -> dict[str, str]:
        """Queue delivery of stored events: ``queued``, ``already-queued`` or ``not-found`` per id."""
        ids = list(event_ids)
        if not ids:
            return {}
        stamp = now_ms()
        args: list[str | int] = [stamp, QUEUE_NAME]
        for event_id in ids:
            args += [event_id, deliver_job_record(event_id, stamp)]
        try:
            results = await self._enqueue(args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        names = {1: "queued", 0: "already-queued", -1: "not-found"}
        return {event_id: names[int(flag)] for event_id, flag in zip(ids, results, strict=True)}

    async def get(self, event_id: str, *, with_actions: bool = True) -> StoredEvent | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(event_key(event_id))
            pipe.hgetall(_actions_key(event_id))
            raw, raw_actions = await pipe.execute()
        return _stored_event(event_id, raw, raw_actions if with_actions else {})

    async def begin_runs(self, event_ids: list[str]) -> list[StoredEvent | None]:
        """Mark the events as delivering and count a run of each; ``None`` for those gone."""
        rows = await self._begin(args=[now_ms(), *event_ids])
        events: list[StoredEvent | None] = []
        for event_id, row in zip(event_ids, rows, strict=True):
            if not row:
                events.append(None)
                continue
            fields, actions = (dict(zip(flat[::2], flat[1::2], strict=True)) for flat in row)
            events.append(_stored_event(event_id, fields, actions))
        return events

    async def queue_settle(
        self,
        pipe: Pipeline,
        outcomes: list[RunOutcome],
        *,
        queue: str | None,
        ledger: Sequence[tuple[str, str]] = (),
        ledger_ttl: int = 0,
    ) -> None:
        """Add to ``pipe`` one script call that records every run's outcome (see ``RunOutcome``) and
        writes the ledger entries ``(key, entry)``; with ``queue``, it also settles each run's job."""
        args: list[str | int] = [now_ms(), self.retention_ms, ledger_ttl, queue or "", len(ledger)]
        for key, entry in ledger:
            args += [key, entry]
        for outcome in outcomes:
            args += [outcome.event_id, outcome.status, outcome.error, outcome.job, outcome.retry_at_ms]
            args.append(len(outcome.actions))
            for action_key, record in outcome.actions.items():
                args += [action_key, orjson.dumps(record).decode()]
        await self._settle(args=args, client=pipe)  # queued in the pipeline, sent with it

    async def finish(self, event_id: str, status: str, *, error: str = "") -> None:
        """Give an event its final status outside a delivery run."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await self.queue_settle(pipe, [RunOutcome(event_id, status, "done", error)], queue=None)
            await pipe.execute()

    async def stats(self) -> dict[str, int]:
        raw = await _resolve(self.redis.hgetall(_STATS))
        return {_text(k): int(v) for k, v in raw.items()}

    async def queue_depth(self) -> int:
        return int(await self.redis.zcard(QUEUE_NAME))

    async def stale_pending(self, *, older_than_seconds: float, limit: int) -> list[str]:
        """Events queued longer ago than ``older_than_seconds`` and still not final."""
        cutoff = now_ms() - int(older_than_seconds * 1000)
        members = await self.redis.zrangebyscore(_PENDING_INDEX, "-inf", cutoff, start=0, num=limit)
        return [_text(member) for member in members]

    async def touch_pending(self, event_ids: list[str]) -> None:
        """Restart the clock of events still pending; forget those whose event expired."""
        if not event_ids:
            return
        stamp = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.exists(event_key(event_id))
            exists = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id, present in zip(event_ids, exists, strict=True):
                if present:
                    pipe.zadd(_PENDING_INDEX, {event_id: stamp}, xx=True)
                else:
                    pipe.zrem(_PENDING_INDEX, event_id)
            await pipe.execute()

    async def job_exists(self, event_id: str) -> bool:
        return bool(await self.redis.exists(JOB_KEY_PREFIX + deliver_job_id(event_id)))

    # Operator access (the admin API and ``magbridge replay``): pages, headers, dead letters, replays.

    async def index_page(
        self,
        index: str,
        *,
        max_ms: int | None = None,
        min_ms: int | None = None,
        after: tuple[int, str] | None = None,
        count: int = 100,
    ) -> list[tuple[str, int]]:
        """Up to ``count`` ``(id, ms)`` of the ``events`` or ``dead`` index, newest first, after ``after``.

        Fewer than ``count`` means the range is exhausted.
        """
        key = {"events": _EVENTS_INDEX, "dead": _DEAD_INDEX}[index]
        after_ms, after_id = after if after else (0, "")
        args = ["+inf" if max_ms is None else max_ms, "-inf" if min_ms is None else min_ms, count, after_id, after_ms]
        try:
            flat = await self._page(keys=[key], args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        pairs = [(_text(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        # Only a page that continues from a cursor's rank can run past ``min_ms``.
        return [pair for pair in pairs if min_ms is None or pair[1] >= min_ms]

    async def headers(self, event_ids: list[str]) -> list[StoredEvent | None]:
        """The envelopes of ``event_ids`` without payload and actions; ``None`` for those gone."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event_id in event_ids:
                    pipe.hmget(event_key(event_id), list(_HEADER_FIELDS))
                rows = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        headers: list[StoredEvent | None] = []
        for event_id, row in zip(event_ids, rows, strict=True):
            values = dict(zip(_HEADER_FIELDS, (_text(value) for value in row), strict=True))
            headers.append(
                None
                if not values["status"]
                else StoredEvent(
                    id=event_id,
                    source=values["source"],
                    type=values["type"],
                    occurred_at=values["occurred_at"],
                    received_at=int(values["received_at"] or 0),
                    updated_at=int(values["updated_at"] or 0),
                    status=values["status"],
                    generation=int(values["generation"] or 0),
                    runs=int(values["runs"] or 0),
                    error=values["error"],
                    payload={},
                )
            )
        return headers

    async def index_sizes(self) -> tuple[int, int]:
        """How many ids the ``events`` and the ``dead`` index hold."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zcard(_EVENTS_INDEX)
                pipe.zcard(_DEAD_INDEX)
                events, dead = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return int(events), int(dead)

    async def dead_letter_times(self, event_ids: list[str]) -> list[int | None]:
        """When each event became a dead letter (ms), or ``None`` when it is not one."""
        if not event_ids:
            return []
        try:
            scores = await _resolve(self.redis.zmscore(_DEAD_INDEX, event_ids))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return [None if score is None else int(score) for score in scores]

    async def job_due(self, event_id: str) -> int | None:
        """When the event's delivery job is due (ms), or ``None`` when none is queued."""
        try:
            score = await _resolve(self.redis.zscore(QUEUE_NAME, deliver_job_id(event_id)))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return None if score is None else int(score)

    async def expires_in_ms(self, event_id: str) -> int | None:
        """Milliseconds until the event expires; ``None`` when it is kept (a dead letter) or gone."""
        try:
            ttl = int(await _resolve(self.redis.pttl(event_key(event_id))))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return ttl if ttl >= 0 else None

    async def replay(self, event_id: str, *, force: bool, dry_run: bool, entry: dict[str, Any]) -> ReplayOutcome:
        """Queue one event's delivery again, atomically (optimistic ``WATCH``), unless a job is queued.

        Without ``force``, dead actions go back to ``pending`` with a fresh retry budget and delivered
        ones stay delivered (the job skips them). With ``force``, the generation goes up, so every
        action gets a new key and is sent once more. The event leaves the dead letters (the job puts
        it back if it fails again) and ``entry``, completed, is appended to its ``replays``.
        """
        keys = (event_key(event_id), _actions_key(event_id), JOB_KEY_PREFIX + deliver_job_id(event_id))
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for _ in range(_REPLAY_TRIES):
                    try:
                        await pipe.watch(*keys)
                        outcome, reset, replays = await self._plan_replay(pipe, event_id, force=force)
                        if dry_run or outcome.status != "replayed":
                            await pipe.reset()  # type: ignore[no-untyped-call]
                            return outcome
                        pipe.multi()  # type: ignore[no-untyped-call]
                        await self._write_replay(
                            pipe, outcome, force, reset, [*replays, {**entry, "force": force, **outcome.entry()}]
                        )
                        await pipe.execute()
                        return outcome
                    except WatchError:
                        continue
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return ReplayOutcome(event_id, "busy")

    async def _plan_replay(
        self, pipe: Any, event_id: str, *, force: bool
    ) -> tuple[ReplayOutcome, dict[str, dict[str, Any]], list[dict[str, Any]]]:
        status, generation, replays = (
            _text(value) for value in await pipe.hmget(event_key(event_id), ["status", "generation", "replays"])
        )
        if not status:
            return ReplayOutcome(event_id, "not-found"), {}, []
        current = int(generation or 0)
        if await pipe.exists(JOB_KEY_PREFIX + deliver_job_id(event_id)):
            return ReplayOutcome(event_id, "already-queued", status, 0, current), {}, []
        reset: dict[str, dict[str, Any]] = {}
        if not force:
            for key, raw in (await pipe.hgetall(_actions_key(event_id))).items():
                record = json.loads(raw)
                if record.get("status") == "dead":
                    record["status"] = "pending"
                    if "failures" in record:
                        record["failures"] = 0
                    reset[_text(key)] = record
        outcome = ReplayOutcome(event_id, "replayed", status, len(reset), current + 1 if force else current)
        history: list[dict[str, Any]] = json.loads(replays or "[]")
        return outcome, reset, history[-(_KEPT_REPLAYS - 1) :]

    async def _write_replay(
        self,
        pipe: Any,
        outcome: ReplayOutcome,
        force: bool,
        reset: dict[str, dict[str, Any]],
        replays: list[dict[str, Any]],
    ) -> None:
        event_id = outcome.event_id
        stamp = now_ms()
        for key, record in reset.items():
            pipe.hset(_actions_key(event_id), key, json.dumps(record, separators=(",", ":")))
        if force:
            pipe.hincrby(event_key(event_id), "generation", 1)
        pipe.hset(event_key(event_id), "replays", json.dumps(replays, separators=(",", ":")))
        pipe.zrem(_DEAD_INDEX, event_id)
        labels = {"mode": str(replays[-1].get("mode", "")), "forced": "true" if force else "false"}
        pipe.hincrby(_STATS, series_name("replays", labels), 1)
        await self._enqueue(args=[stamp, QUEUE_NAME, event_id, deliver_job_record(event_id, stamp)], client=pipe)
