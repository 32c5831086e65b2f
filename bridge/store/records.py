"""Stored events as read back from Redis, and the helpers every store module shares."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.events import canonical_json

__all__ = ["EVENT_STATUSES", "FINAL_STATUSES", "StoredEvent", "now_ms", "payload_json", "stored_event", "text"]

EVENT_STATUSES = ("queued", "delivering", "retrying", "delivered", "failed", "ignored")
FINAL_STATUSES = ("delivered", "failed", "ignored")


def now_ms() -> int:
    return int(time.time() * 1000)


def text(value: bytes | str | None) -> str:
    """A Redis reply as ``str`` ("" for a missing value)."""
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def payload_json(payload: dict[str, Any]) -> str:
    try:
        return orjson.dumps(payload).decode()  # several times faster than json for every event stored
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, which JSON allows and orjson does not
        return canonical_json(payload)


@dataclass(slots=True)
class StoredEvent:
    """An event as read back from Redis (``payload`` and ``actions`` empty when not asked for)."""

    id: str
    source: str
    type: str
    occurred_at: str
    received_at: int
    updated_at: int
    status: str
    generation: int
    runs: int
    error: str
    payload: dict[str, Any]
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)
    replays: list[dict[str, Any]] = field(default_factory=list)
    job: str = ""  # the delivery job that owns the event while it is not final
    tries: int = 0  # delivery runs since it was last queued afresh (ingest, replay): arq's job_try, per event


def stored_event(
    event_id: str, raw: Mapping[bytes, bytes] | Mapping[str, str], raw_actions: Mapping[Any, Any] | None = None
) -> StoredEvent | None:
    """Parse an event hash (and its actions hash); ``None`` for an empty hash (no such event)."""
    if not raw:
        return None
    fields = {text(k): text(v) for k, v in raw.items()}
    return StoredEvent(
        id=event_id,
        source=fields.get("source", ""),
        type=fields.get("type", ""),
        occurred_at=fields.get("occurred_at", ""),
        received_at=int(fields.get("received_at") or 0),
        updated_at=int(fields.get("updated_at") or 0),
        status=fields.get("status", ""),
        generation=int(fields.get("generation") or 0),
        runs=int(fields.get("runs") or 0),
        error=fields.get("error", ""),
        payload=json.loads(fields.get("payload") or "{}"),
        actions={text(k): json.loads(v) for k, v in (raw_actions or {}).items()},
        replays=json.loads(fields.get("replays") or "[]"),
        job=fields.get("job", ""),
        tries=int(fields.get("tries") or 0),
    )
