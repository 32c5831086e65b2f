"""Operator reads of the event store (admin API, console, ``magbridge replay``): one event, pages of
the listing and dead-letter indexes, their sizes and the shared counters. Every Redis failure becomes
``StoreUnavailable``; nothing here writes.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge.store import keys
from bridge.store.records import StoredEvent, stored_event, text
from bridge.store.scripts import script
from config.errors import StoreUnavailable

__all__ = ["EventReader"]

_HEADER_FIELDS = ("source", "type", "occurred_at", "received_at", "updated_at", "status", "generation", "runs", "error")
_INDEXES = {"events": keys.EVENTS_INDEX, "dead": keys.DEAD_INDEX}
_T = TypeVar("_T")


async def _resolve(value: Awaitable[_T] | _T) -> _T:
    """redis-py types its async commands as ``Awaitable[T] | T``; they are always awaitables here."""
    return await value if inspect.isawaitable(value) else value


class EventReader:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self._page = script(redis, __package__, "page.lua")

    async def get(self, event_id: str, *, with_actions: bool = True) -> StoredEvent | None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.event(event_id))
                pipe.hgetall(keys.actions(event_id))
                raw, raw_actions = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return stored_event(event_id, raw, raw_actions if with_actions else None)

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
        after_ms, after_id = after if after else (0, "")
        args = ["+inf" if max_ms is None else max_ms, "-inf" if min_ms is None else min_ms, count, after_id, after_ms]
        try:
            flat = await self._page(keys=[_INDEXES[index]], args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        pairs = [(text(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        # Only a page that continues from a cursor's rank can run past ``min_ms``.
        return [pair for pair in pairs if min_ms is None or pair[1] >= min_ms]

    async def headers(self, event_ids: list[str]) -> list[StoredEvent | None]:
        """The envelopes of ``event_ids`` without payload and actions; ``None`` for those gone."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event_id in event_ids:
                    pipe.hmget(keys.event(event_id), list(_HEADER_FIELDS))
                rows = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return [
            stored_event(event_id, {name: value for name, value in zip(_HEADER_FIELDS, row, strict=True) if value})
            if row[_HEADER_FIELDS.index("status")]
            else None
            for event_id, row in zip(event_ids, rows, strict=True)
        ]

    async def index_sizes(self) -> tuple[int, int]:
        """How many ids the ``events`` and the ``dead`` index hold."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zcard(keys.EVENTS_INDEX)
                pipe.zcard(keys.DEAD_INDEX)
                events, dead = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return int(events), int(dead)

    async def count_between(self, index: str, *, min_ms: int | None = None, max_ms: int | None = None) -> int:
        """How many ids of the ``events`` or ``dead`` index fall in the time range (``ZCOUNT``: O(log n))."""
        low, high = "-inf" if min_ms is None else min_ms, "+inf" if max_ms is None else max_ms
        try:
            return int(await _resolve(self.redis.zcount(_INDEXES[index], low, high)))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def dead_letter_times(self, event_ids: list[str]) -> list[int | None]:
        """When each event became a dead letter (ms), or ``None`` when it is not one."""
        return await self._scores(keys.DEAD_INDEX, event_ids)

    async def due_times(self, event_ids: list[str]) -> list[int | None]:
        """When each event's delivery is due (ms), or ``None`` when it is final."""
        return await self._scores(keys.PENDING_INDEX, event_ids)

    async def _scores(self, index: str, event_ids: list[str]) -> list[int | None]:
        if not event_ids:
            return []
        try:
            scores = await _resolve(self.redis.zmscore(index, event_ids))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return [None if score is None else int(score) for score in scores]

    async def expires_in_ms(self, event_id: str) -> int | None:
        """Milliseconds until the event expires; ``None`` when it is kept (a dead letter) or gone."""
        try:
            ttl = int(await _resolve(self.redis.pttl(keys.event(event_id))))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return ttl if ttl >= 0 else None

    async def seen(self, event_id: str) -> tuple[int, int] | None:
        """The dedupe marker of an id (``keys.seen``): when its first copy was received (epoch ms) and
        the milliseconds until the marker expires; ``None`` when the id is unknown or past the window."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(keys.seen(event_id))
                pipe.pttl(keys.seen(event_id))
                received, ttl = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return None if received is None else (int(received), max(int(ttl), 0))

    async def stats(self) -> dict[str, int]:
        """The shared counters (``keys.STATS``)."""
        try:
            raw: dict[Any, Any] = await _resolve(self.redis.hgetall(keys.STATS))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return {text(k): int(v) for k, v in raw.items()}
