"""The delivery queue: arq jobs through arq's public API, each delivering one batch of events.

A job runs ``deliver_events()`` (``workers.jobs``); its batch is the list ``keys.batch(job id)``
and each event of it names the job that owns it (its ``job`` field). A job runs only the events it
still owns, so a stale or repeated job is harmless.

- New events join the **intake** job (``keys.INTAKE``): the one job that takes them until it holds
  ``WORKER_BATCH_SIZE`` or a worker begins it. Under load the intake fills while the workers are busy,
  so batches grow with the load; at rest a job starts as soon as a worker polls.
- Follow-up, replay and sweep jobs get an id derived from their events and a salt saying why they
  exist (a retry's due time, a replay, a sweep), so queueing one twice queues it once
  (``enqueue_job`` returns ``None`` for an id that exists).

Jobs are serialized as JSON, not pickle: readable by an operator, and no code runs on load.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from bridge.store.keys import QUEUE_NAME

__all__ = [
    "DELIVER_FUNCTION",
    "QUEUE_NAME",
    "chunks",
    "deliver_job_id",
    "deserialize_job",
    "enqueue_deliveries",
    "intake_job_prefix",
    "job_exists",
    "serialize_job",
]

DELIVER_FUNCTION = "deliver_events"
_T = TypeVar("_T")


def serialize_job(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def deserialize_job(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(raw)
    return data


def deliver_job_id(event_ids: Sequence[str], salt: str = "") -> str:
    """``deliver:`` and a digest of the ids and ``salt``: the same content, the same job."""
    digest = hashlib.sha256(orjson.dumps([salt, *event_ids])).hexdigest()[:32]
    return f"deliver:{digest}"


def intake_job_prefix() -> str:
    """A fresh prefix for the intake jobs one ingest call may open (``:1``, ``:2``... appended)."""
    return f"deliver:{uuid.uuid4().hex}"


def chunks(items: Sequence[_T], size: int) -> list[Sequence[_T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


async def enqueue_deliveries(
    redis: ArqRedis, job_ids: Iterable[str], *, due_ms: int | None = None, expires_s: float | None = None
) -> None:
    """Queue the delivery jobs, due now or at ``due_ms``; a job that exists already stays as it is.

    ``expires_s``: how long arq keeps a job that no worker started (the sweeper queues its events
    again should it lapse); arq's default is a day past its due time.
    """
    defer = None if due_ms is None else datetime.fromtimestamp(due_ms / 1000, UTC)
    await asyncio.gather(
        *(
            redis.enqueue_job(
                DELIVER_FUNCTION, _job_id=job_id, _queue_name=QUEUE_NAME, _defer_until=defer, _expires=expires_s
            )
            for job_id in job_ids
        )
    )


async def job_exists(redis: ArqRedis, job_id: str) -> bool:
    """Whether arq holds the job, queued, deferred or running."""
    status = await Job(job_id, redis, _queue_name=QUEUE_NAME).status()
    return status in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress)
