"""Coalesce the event-store writes of concurrent webhook requests into one Redis script call.

Under a burst, many requests reach the store in the same event-loop iteration; one ingest script
call for all of them costs one round trip instead of one each (``bridge.coalesce``). Each request
still gets its own answer only after that call has stored its events, and a failure fails every
request in the call.
"""

from __future__ import annotations

from bridge.coalesce import Coalescer
from bridge.events import Envelope
from bridge.store.ingest import EventWriter

__all__ = ["IngestBatcher"]


class IngestBatcher:
    def __init__(self, writer: EventWriter, *, max_events: int = 500):
        self._writer = writer
        self._coalescer: Coalescer[list[Envelope], list[bool]] = Coalescer(
            self._write, max_weight=max_events, weight=len
        )

    async def ingest(self, envelopes: list[Envelope]) -> list[bool]:
        """Store the envelopes with whatever else arrives in this loop iteration; ``True`` per new one."""
        return await self._coalescer.submit(envelopes)

    async def _write(self, requests: list[list[Envelope]]) -> list[list[bool]]:
        results = await self._writer.ingest([envelope for envelopes in requests for envelope in envelopes])
        answers, offset = [], 0
        for envelopes in requests:
            answers.append(results[offset : offset + len(envelopes)])
            offset += len(envelopes)
        return answers
