"""Ingest: store new events durably and queue their delivery; acknowledge only after both.

One script call stores a batch (the events of every webhook request in one event-loop iteration, or
one Magnify page): each new event's hash, its place in the listing and pending indexes, and the id of
the job that will deliver it; a duplicate id only counts. Then one arq job per ``batch_size`` new
events is enqueued (``bridge.store.queue``). Should that fail, the sender is refused (503) and sends
again: its events are duplicates now, and a duplicate that no run has started yet gets its job
queued if arq does not hold it (``bridge.store.orphans``). Should the process die between the two,
the events wait in ``mb:pending`` without a job and the sweeper (``workers.sweeper``) queues them.
"""

from __future__ import annotations

from collections.abc import Sequence

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from bridge.events import Envelope
from bridge.labels import event_type_label
from bridge.store import keys
from bridge.store.orphans import requeue_orphans
from bridge.store.queue import chunks, deliver_job_id, enqueue_deliveries
from bridge.store.records import now_ms, payload_json
from bridge.store.scripts import script
from config.errors import StoreUnavailable

__all__ = ["EventWriter"]


class EventWriter:
    def __init__(self, redis: ArqRedis, *, retention_seconds: int, batch_size: int):
        self._redis = redis
        self._retention_ms = retention_seconds * 1000
        self._batch_size = batch_size
        self._ingest = script(redis, __package__, "ingest.lua")

    async def ingest(self, envelopes: Sequence[Envelope]) -> list[bool]:
        """Store and queue each envelope not seen before; ``True`` per envelope that was new.

        Raises ``StoreUnavailable`` when Redis fails: then nothing may be acknowledged.
        """
        batches = chunks([envelope.id for envelope in envelopes], self._batch_size)
        job_ids = [deliver_job_id(batch) for batch in batches]
        args: list[str | int] = [now_ms(), self._retention_ms, keys.EVENT_PREFIX]
        for index, envelope in enumerate(envelopes):
            args += [
                envelope.id,
                envelope.source,
                envelope.type,
                envelope.occurred_at,
                payload_json(envelope.payload),
                job_ids[index // self._batch_size],
                event_type_label(envelope.source, envelope.type),
            ]
        expires = self._retention_ms / 1000
        try:
            results = await self._ingest(keys=_INGEST_KEYS, args=args)
            jobs: dict[str, list[str]] = {}
            waiting: list[tuple[str, str]] = []
            for index, (envelope, result) in enumerate(zip(envelopes, results, strict=True)):
                if result == 1:
                    jobs.setdefault(job_ids[index // self._batch_size], []).append(envelope.id)
                elif result != 0:
                    waiting.append((envelope.id, result.decode()))
            await enqueue_deliveries(self._redis, jobs, expires_s=expires)
            if waiting:
                await requeue_orphans(
                    self._redis, waiting, batch_size=self._batch_size, salt="resent", expires_s=expires
                )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return [result == 1 for result in results]


_INGEST_KEYS = [keys.EVENTS_INDEX, keys.PENDING_INDEX, keys.STATS]
