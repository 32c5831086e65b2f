"""Serve the calls made in one event-loop iteration with one round trip.

Under load many coroutines reach the same Redis script in the same loop iteration (webhook requests
storing events, deliveries asking a destination's gate for a slot). ``Coalescer.submit`` queues one
item and waits; on the next iteration (or ``window`` seconds after the first item, for calls that
can wait a little to share more), or as soon as ``max_weight`` is queued, one ``flush`` call serves
every queued item and each caller gets its own result. A failed flush fails every caller in it.
``drain`` serves what is queued at once and waits for every flush in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_weight: int = 500,
        weight: Callable[[T], int] = lambda _: 1,
        window: float = 0.0,
    ):
        self._flush_items = flush
        self._window = window
        self._max_weight = max_weight
        self._weight = weight
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._queued_weight = 0
        self._timer: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """``flush([..., item, ...])``'s result for ``item``."""
        return await self.post(item)

    def post(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` now and return its result's future: the item is served even if the
        caller stops waiting (a cancelled request must still release what it holds)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._pending:
            if self._window:
                self._timer = loop.call_later(self._window, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)
        self._pending.append((item, future))
        self._queued_weight += self._weight(item)
        if self._queued_weight >= self._max_weight:
            self._flush()
        return future

    async def drain(self) -> None:
        """Serve what is queued now and wait for every flush in flight (their failures are the
        callers', not raised here)."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        if self._timer is not None:
            # An early flush (max_weight, drain) ends this batch's wait: the next batch's window
            # starts with its own first item, not with this one's.
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending, self._queued_weight = self._pending, [], 0
        task = asyncio.get_running_loop().create_task(self._serve(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush_items([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # the caller was cancelled
                future.set_result(result)
