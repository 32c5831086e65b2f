"""Coalesce the event-store writes of concurrent webhook requests into one Redis script call.

Under a burst, many requests reach the store in the same event-loop iteration; one ingest script
call for all of them costs one round trip instead of one each. Each request still gets its own
answer only after that call has stored its events, and a failure fails every request in the call.
A lone request is written on the next loop iteration, so light traffic waits for nothing.
"""

from __future__ import annotations

import asyncio

from bridge.events import Envelope
from bridge.store import EventStore

__all__ = ["IngestBatcher"]


class IngestBatcher:
    def __init__(self, store: EventStore, *, max_events: int = 500):
        self._store = store
        self._max_events = max_events
        self._pending: list[tuple[list[Envelope], asyncio.Future[list[bool]]]] = []
        self._count = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def ingest(self, envelopes: list[Envelope]) -> list[bool]:
        """Store the envelopes with whatever else arrives in this loop iteration; ``True`` per new one."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((envelopes, future))
        self._count += len(envelopes)
        if self._count >= self._max_events:
            self._flush()
        return await future

    def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending, self._count = self._pending, [], 0
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: list[tuple[list[Envelope], asyncio.Future[list[bool]]]]) -> None:
        try:
            results = await self._store.ingest([envelope for envelopes, _ in batch for envelope in envelopes])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        offset = 0
        for envelopes, future in batch:
            if not future.done():
                future.set_result(results[offset : offset + len(envelopes)])
            offset += len(envelopes)
