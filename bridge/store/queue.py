"""The delivery queue: arq jobs, each carrying a batch of event ids, through arq's public API.

A job runs ``deliver_events(event_ids)`` (``workers.jobs``). Its id is derived from its content (the
ids and a salt saying why it exists: an ingest call, a retry's due time, a replay, a sweep), so
enqueueing the same batch twice queues it once (``enqueue_job`` returns ``None`` for an id that
exists). Each event names the job that owns it (its ``job`` field): a job runs only the events it
owns, so a stale or repeated job is harmless.

Jobs are serialized as JSON, not pickle: readable by an operator, and no code runs on load.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
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


def chunks(items: Sequence[_T], size: int) -> list[Sequence[_T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


async def enqueue_deliveries(
    redis: ArqRedis, jobs: Mapping[str, Sequence[str]], *, due_ms: int | None = None, expires_s: float | None = None
) -> None:
    """Queue ``job id -> event ids``, due now or at ``due_ms``; a job that exists already stays as it is.

    ``expires_s``: how long arq keeps a job that no worker started (the sweeper re-queues its events
    should it lapse); arq's default is a day past its due time.
    """
    defer = None if due_ms is None else datetime.fromtimestamp(due_ms / 1000, UTC)
    await asyncio.gather(
        *(
            redis.enqueue_job(
                DELIVER_FUNCTION,
                list(ids),
                _job_id=job_id,
                _queue_name=QUEUE_NAME,
                _defer_until=defer,
                _expires=expires_s,
            )
            for job_id, ids in jobs.items()
        )
    )


async def job_exists(redis: ArqRedis, job_id: str) -> bool:
    """Whether arq holds the job, queued, deferred or running."""
    status = await Job(job_id, redis, _queue_name=QUEUE_NAME).status()
    return status in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress)
