"""The lifecycle of delivery runs in Redis: ``begin`` a job's runs, ``queue_settle`` their outcomes.

A job runs the events of its batch that it still owns (their ``job`` field, see
``bridge.store.queue``): an event that another job took over, or that is final, is skipped, so a job
that runs twice (arq re-runs one whose worker died) or a stale one repeats nothing. Each costs one
script call for the whole job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bridge.store import keys
from bridge.store.records import StoredEvent, now_ms, stored_event, text
from bridge.store.scripts import script
from bridge.store.throughput import queue_finished

__all__ = ["SKIPPED", "DeliveryRuns", "RunOutcome"]

SKIPPED = "skipped"
"""``begin``'s answer for an event this job does not own."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a delivery run came to. ``outcome``: ``done`` (``status`` is final), ``retry`` (``next_job``
    owns it, due at ``due_ms``), ``again`` (interrupted: the same job runs it again), ``gone`` (the
    event expired)."""

    event_id: str
    status: str
    outcome: str
    error: str = ""
    due_ms: int = 0
    next_job: str = ""
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)


class DeliveryRuns:
    def __init__(self, redis: aioredis.Redis, *, retention_seconds: int, record_retention_seconds: int | None = None):
        """``retention_seconds``: the dedupe window, which an unfinished event keeps;
        ``record_retention_seconds``: a delivered or ignored event's (none: the window)."""
        self._retention_ms = retention_seconds * 1000
        self._record_retention_ms = (record_retention_seconds or retention_seconds) * 1000
        self._begin = script(redis, __package__, "begin.lua")
        self._settle = script(redis, __package__, "settle.lua")

    async def begin(self, job_id: str) -> list[tuple[str, StoredEvent | str | None]]:
        """Close the job to new events, mark the events of its batch that it owns as delivering and
        count a run of each; per event its id and its record, ``None`` when it is gone, or ``SKIPPED``."""
        args: list[str | int] = [now_ms(), keys.EVENT_PREFIX, keys.ACTIONS_PREFIX, job_id, keys.batch(job_id)]
        raw_ids, rows = await self._begin(keys=[keys.INTAKE], args=args)
        events: list[tuple[str, StoredEvent | str | None]] = []
        for raw_id, row in zip(raw_ids, rows, strict=True):
            event_id = text(raw_id)
            if not isinstance(row, list):
                events.append((event_id, SKIPPED if row else None))
                continue
            fields, actions = (dict(zip(flat[::2], flat[1::2], strict=True)) for flat in row)
            events.append((event_id, stored_event(event_id, fields, actions)))
        return events

    async def queue_settle(
        self,
        pipe: Pipeline,
        job_id: str,
        outcomes: list[RunOutcome],
        *,
        ledger: Sequence[tuple[str, str]],
        ledger_ttl: int,
    ) -> Counter[str]:
        """Add to ``pipe`` one script call that records every run's outcome, appends each retry to
        its follow-up job's batch and writes the ledger entries ``(key, entry)`` (for ``ledger_ttl``, or
        for the record retention where their event was delivered now: only a replay of it reads them
        then); the job's own batch goes unless a run was interrupted (the job then runs again). The
        events that became final are counted in this minute's bridge-wide figure
        (``bridge.store.throughput``) in the same pipeline; they are returned, by status."""
        finished = not any(run.outcome == "again" for run in outcomes)
        now = now_ms()
        args: list[str | int] = [
            now, self._retention_ms, ledger_ttl, keys.EVENT_PREFIX, keys.ACTIONS_PREFIX, keys.BATCH_PREFIX,
            keys.batch(job_id) if finished else "", len(ledger), self._record_retention_ms,
        ]  # fmt: skip
        finished_requests = {
            keys.ledger(request)
            for run in outcomes
            if run.outcome == "done" and run.status != "failed"
            for record in run.actions.values()
            for request in record.get("requests", ())
        }
        for key, entry in ledger:
            args += [key, entry, "record" if key in finished_requests else "window"]
        for run in outcomes:
            args += [run.event_id, run.status, run.error, run.outcome, run.due_ms, run.next_job, len(run.actions)]
            for action_key, record in run.actions.items():
                args += [action_key, orjson.dumps(record).decode()]
        await self._settle(keys=_SETTLE_KEYS, args=args, client=pipe)  # queued in the pipeline, sent with it
        finished_events = Counter(run.status for run in outcomes if run.outcome == "done")
        queue_finished(pipe, finished_events, now)
        return finished_events


_SETTLE_KEYS = [keys.PENDING_INDEX, keys.DEAD_INDEX]
