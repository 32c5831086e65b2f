"""Ingest: store new events durably and queue their delivery; acknowledge only after both.

One script call stores a batch (the events of every webhook request in one event-loop iteration, or
one Magnify page): each new event's hash and its dedupe marker (``keys.seen``), its place in the
listing and pending indexes, and its place in the intake job's batch (``bridge.store.queue``); a
duplicate id (one whose marker or record still lives) only counts (in ``keys.STATS`` by source, and
in this process's ``magbridge_received``/``_duplicates`` series). Then the jobs that took the events
are enqueued, unless this process enqueued them already. Should that fail, the sender is refused
(503) and sends again: a duplicate that no run has started yet has its job enqueued again, which is
a no-op when arq holds it. Should the process die between the two, the events wait in
``keys.PENDING_INDEX`` and the sweeper (``workers.sweeper``) queues them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from bridge.events import Envelope
from bridge.process_metrics import IngestSeries
from bridge.store import keys
from bridge.store.queue import enqueue_deliveries, intake_job_prefix
from bridge.store.records import now_ms, payload_json
from bridge.store.scripts import script
from config.errors import StoreUnavailable

__all__ = ["EventWriter"]

_REMEMBERED_JOBS = 1024


class EventWriter:
    def __init__(
        self,
        redis: ArqRedis,
        *,
        retention_seconds: int,
        record_retention_seconds: int | None = None,
        batch_size: int,
        series: IngestSeries | None = None,
    ):
        """``retention_seconds``: the dedupe window; ``record_retention_seconds``: how long the listing
        index keeps an event (its record's retention once final; none: the window); ``series``: where
        this process counts what it stored (none: not counted, as in benchmarks)."""
        self._redis = redis
        self._series = series
        self._retention_ms = retention_seconds * 1000
        self._record_retention_ms = (record_retention_seconds or retention_seconds) * 1000
        self._batch_size = batch_size
        self._ingest = script(redis, __package__, "ingest.lua")
        # Jobs this process enqueued, or is enqueueing: arq holds each until a worker begins it, and a
        # begun job takes no new events, so a job in here needs no second ``enqueue_job``; calls that
        # meet a job being enqueued wait for that one call (a failed one is tried again).
        self._enqueues: OrderedDict[str, asyncio.Future[None]] = OrderedDict()

    async def ingest(self, envelopes: Sequence[Envelope]) -> list[bool]:
        """Store and queue each envelope not seen before; ``True`` per envelope that was new.

        Raises ``StoreUnavailable`` when Redis fails: then nothing may be acknowledged.
        """
        args: list[str | int] = [
            now_ms(), self._retention_ms, keys.EVENT_PREFIX, keys.BATCH_PREFIX, self._batch_size, intake_job_prefix(),
            keys.SEEN_PREFIX, self._record_retention_ms,
        ]  # fmt: skip
        for envelope in envelopes:
            args += [
                envelope.id,
                envelope.source,
                envelope.type,
                envelope.occurred_at,
                payload_json(envelope.payload),
            ]
        try:
            results, taken = await self._ingest(keys=_INGEST_KEYS, args=args)
            new = [result == 1 for result in results]
            if self._series is not None:  # stored now, whether or not the enqueue below succeeds
                self._series.count(envelopes, new)
            jobs = dict.fromkeys(job.decode() for job in taken)
            jobs.update((result.decode(), None) for result in results if isinstance(result, bytes))
            await asyncio.gather(*(asyncio.shield(self._enqueue(job)) for job in jobs))
        except (RedisError, OSError) as exc:
            self.forget_enqueued()
            raise StoreUnavailable(f"redis: {exc}") from exc
        return new

    def forget_enqueued(self) -> None:
        """Enqueue each job again when it next takes events (a no-op where arq holds it): after a
        failure, the Redis that answers next may be another host (a Sentinel failover) or a restart
        without the jobs enqueued before."""
        self._enqueues.clear()

    def _enqueue(self, job: str) -> asyncio.Future[None]:
        """The one ``enqueue_job`` call of ``job`` in this process, started now if none succeeded or runs."""
        call = self._enqueues.get(job)
        if call is None or (call.done() and (call.cancelled() or call.exception() is not None)):
            call = asyncio.ensure_future(enqueue_deliveries(self._redis, [job], expires_s=self._retention_ms / 1000))
            self._enqueues[job] = call
            while len(self._enqueues) > _REMEMBERED_JOBS:
                self._enqueues.popitem(last=False)
        return call


_INGEST_KEYS = [keys.EVENTS_INDEX, keys.PENDING_INDEX, keys.STATS, keys.INTAKE]
