"""The delivery queue: arq's own job records, written by us so that storing an event and queueing
its job happen in one Redis script (nothing is acknowledged that is not also queued).

Jobs are serialized as JSON, not pickle: the web process writes them from Lua, and a job record
in Redis stays readable by an operator. Job records are written without expiry, so arq can never
drop a job as "expired" before it ran.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = [
    "DELIVER_FUNCTION",
    "DELIVER_JOB_PREFIX",
    "JOB_KEY_PREFIX",
    "QUEUE_NAME",
    "deliver_job_id",
    "deliver_job_record",
    "deserialize_job",
    "serialize_job",
]

QUEUE_NAME = "arq:queue"
JOB_KEY_PREFIX = "arq:job:"
DELIVER_FUNCTION = "deliver_event"
DELIVER_JOB_PREFIX = "deliver:"


def serialize_job(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def deserialize_job(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


def deliver_job_id(event_id: str) -> str:
    """One job id per event: enqueueing an event that is already queued is a no-op."""
    return DELIVER_JOB_PREFIX + event_id


def deliver_job_record(event_id: str, now_ms: int) -> str:
    """The record arq's worker reads (``arq.jobs.serialize_job`` layout) for ``deliver_event(event_id)``."""
    # Written for every event ingested: a template with the id as the only value to encode.
    return f'{{"t":null,"f":"{DELIVER_FUNCTION}","a":[{orjson.dumps(event_id).decode()}],"k":{{}},"et":{now_ms}}}'
