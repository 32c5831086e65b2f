"""Coalesce Magnews merges of concurrent jobs into ``/v19/contacts/batchmerge`` calls.

Jobs in one worker process hand their merge to ``MergeBatcher.merge`` and wait. Merges for the same
database and options are sent together once ``max_size`` are waiting or ``max_wait`` has passed
since the first; each caller gets its own contact's result back: a per-item ``ok: false`` fails
that action only, while a failure of the whole call (timeout, 5xx, deferral) is every caller's.
A lone merge is sent as a plain ``/v19/contacts/merge``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from workers.destinations.http import ApiResponse

__all__ = ["BatchSender", "MergeBatcher", "SingleSender"]

SingleSender = Callable[[dict[str, Any], dict[str, Any], str], Awaitable[ApiResponse]]
"""``(values, options, idempotency_key) -> response`` for one merge."""
BatchSender = Callable[[int, list[dict[str, Any]], dict[str, Any], str], Awaitable[list[ApiResponse | Exception]]]
"""``(iddatabase, contacts' values, options, idempotency_key) -> one result per contact``."""


@dataclass(slots=True)
class _Pending:
    database: int
    options: dict[str, Any]
    items: list[tuple[dict[str, Any], str, asyncio.Future[ApiResponse]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class MergeBatcher:
    def __init__(self, single: SingleSender, batch: BatchSender, *, max_size: int, max_wait: float):
        self._single = single
        self._batch = batch
        self._max_size = max_size
        self._max_wait = max_wait
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def merge(self, values: dict[str, Any], options: dict[str, Any], key: str) -> ApiResponse:
        """Queue one merge for the next batch and wait for its own result."""
        database = int(options["iddatabase"])
        rest = {name: value for name, value in options.items() if name != "iddatabase"}
        group = f"{database}:{orjson.dumps(rest, option=orjson.OPT_SORT_KEYS).decode()}"
        pending = self._pending.get(group)
        if pending is None:
            pending = self._pending[group] = _Pending(database, rest)
            pending.timer = asyncio.get_running_loop().call_later(self._max_wait, self._flush, group)
        future: asyncio.Future[ApiResponse] = asyncio.get_running_loop().create_future()
        pending.items.append((values, key, future))
        if len(pending.items) >= self._max_size:
            self._flush(group)
        return await future

    def _flush(self, group: str) -> None:
        pending = self._pending.pop(group, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.create_task(self._send(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, pending: _Pending) -> None:
        futures = [future for _, _, future in pending.items]
        try:
            if len(pending.items) == 1:
                values, key, _ = pending.items[0]
                options = {**pending.options, "iddatabase": pending.database}
                results: list[ApiResponse | Exception] = [await self._single(values, options, key)]
            else:
                # The batch's own key is stable for the same set of contacts, so a resend is idempotent.
                batch_key = hashlib.sha256("\n".join(key for _, key, _ in pending.items).encode()).hexdigest()
                contacts = [values for values, _, _ in pending.items]
                results = await self._batch(pending.database, contacts, pending.options, batch_key)
        except Exception as exc:
            results = [exc] * len(futures)
        for future, result in zip(futures, results, strict=True):
            if future.done():
                continue  # the caller was cancelled
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Send what is waiting and let the calls in flight finish."""
        for group in list(self._pending):
            self._flush(group)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
