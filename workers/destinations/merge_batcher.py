"""Coalesce Magnews merges of concurrent jobs into ``/v19/contacts/batchmerge`` calls.

Jobs in one worker process hand their merge to ``MergeBatcher.merge`` and wait. Merges for the same
database and options are sent together once ``max_size`` are waiting or ``max_wait`` has passed
since the first (one ``bridge.coalesce.Coalescer`` per database and options); each caller gets its
own contact's result back, read by ``workers.destinations.magnews.merge_outcome``: a per-item
``ok: false`` or ``errors`` fails that action only, a per-item answer with no outcome is that
action's alone to read back (``MergeOutcomeUnknown``, see ``magnews_merge``), while a failure of the
whole call (timeout, 5xx, deferral, results that cannot be paired with the contacts) is every
caller's. A lone merge is sent as a plain ``/v19/contacts/merge``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson

from bridge.coalesce import Coalescer
from workers.destinations.http import ApiResponse

__all__ = ["BatchSender", "MergeBatcher", "SingleSender"]

SingleSender = Callable[[dict[str, Any], dict[str, Any], str], Awaitable[ApiResponse]]
"""``(values, options, idempotency_key) -> response`` for one merge."""
BatchSender = Callable[[int, list[dict[str, Any]], dict[str, Any], str], Awaitable[list[ApiResponse | Exception]]]
"""``(iddatabase, contacts' values, options, idempotency_key) -> one result per contact``."""

_Merge = tuple[dict[str, Any], str]
"""One queued merge: the contact's values and the action's idempotency key."""


class MergeBatcher:
    def __init__(self, single: SingleSender, batch: BatchSender, *, max_size: int, max_wait: float):
        self._single = single
        self._batch = batch
        self._max_size = max_size
        self._max_wait = max_wait
        # One per database and options; their number is bounded by the rules' distinct merge options.
        self._groups: dict[str, Coalescer[_Merge, ApiResponse | Exception]] = {}

    async def merge(self, values: dict[str, Any], options: dict[str, Any], key: str) -> ApiResponse:
        """Queue one merge for the next batch and wait for its own result."""
        database = int(options["iddatabase"])
        rest = {name: value for name, value in options.items() if name != "iddatabase"}
        group = f"{database}:{orjson.dumps(rest, option=orjson.OPT_SORT_KEYS).decode()}"
        coalescer = self._groups.get(group)
        if coalescer is None:
            coalescer = self._groups[group] = Coalescer(
                partial(self._send, database, rest), max_weight=self._max_size, window=self._max_wait
            )
        result = await coalescer.submit((values, key))
        if isinstance(result, Exception):
            raise result  # this contact's own failure in a batch that otherwise went through
        return result

    async def _send(
        self, database: int, options: dict[str, Any], merges: list[_Merge]
    ) -> list[ApiResponse | Exception]:
        if len(merges) == 1:
            values, key = merges[0]
            return [await self._single(values, {**options, "iddatabase": database}, key)]
        # The batch's own key is stable for the same set of contacts, so a resend is idempotent.
        batch_key = hashlib.sha256("\n".join(key for _, key in merges).encode()).hexdigest()
        return await self._batch(database, [values for values, _ in merges], options, batch_key)

    async def close(self) -> None:
        """Send what is waiting and let the calls in flight finish."""
        await asyncio.gather(*(coalescer.drain() for coalescer in list(self._groups.values())))
