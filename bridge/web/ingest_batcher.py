"""Coalesce the event-store writes of concurrent webhook requests into one Redis script call.

Under a burst, many requests reach the store in the same event-loop iteration; one ingest script
call for all of them costs one round trip instead of one each (``bridge.coalesce``). Each request
still gets its own answer only after that call has stored its events, and a failure fails every
request in the call. With a replica wait (``bridge.store.replicas``), one ``WAIT`` follows each call
and covers every request in it.
"""

from __future__ import annotations

from bridge.coalesce import Coalescer
from bridge.events import Envelope
from bridge.store.ingest import EventWriter
from bridge.store.replicas import ReplicaWait
from config.errors import StoreUnavailable

__all__ = ["IngestBatcher"]


class IngestBatcher:
    def __init__(self, writer: EventWriter, *, max_events: int = 500, replicas: ReplicaWait | None = None):
        self._writer = writer
        self._replicas = replicas
        self._coalescer: Coalescer[list[Envelope], list[bool]] = Coalescer(
            self._write, max_weight=max_events, weight=len
        )

    async def ingest(self, envelopes: list[Envelope]) -> list[bool]:
        """Store the envelopes with whatever else arrives in this loop iteration; ``True`` per new one."""
        return await self._coalescer.submit(envelopes)

    async def _write(self, requests: list[list[Envelope]]) -> list[list[bool]]:
        results = await self._writer.ingest([envelope for envelopes in requests for envelope in envelopes])
        if self._replicas is not None:  # duplicates too: their first copy may not have reached a replica
            try:
                await self._replicas.confirm()
            except StoreUnavailable:  # the enqueues may be lost with this primary as well
                self._writer.forget_enqueued()
                raise
        answers, offset = [], 0
        for envelopes in requests:
            answers.append(results[offset : offset + len(envelopes)])
            offset += len(envelopes)
        return answers
