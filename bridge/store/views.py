"""Stored events as an operator sees them: the JSON bodies of ``GET /admin/events``,
``GET /admin/events/{id}`` and ``GET /admin/dead-letters``, which ``magbridge events`` and ``magbridge
dead-letters`` print too. One builder for both, from the store's reads (``reads``, ``queries``).

The payload is shown as stored, as the contract's admin API promises ("the raw payload"): the
receiver never stores the webhook secret (it travels in the query string or a header), and API
tokens never reach an event.
"""

from __future__ import annotations

from typing import Any

from bridge.store.queries import EventQuery, encode_cursor, find_events, format_ms
from bridge.store.reads import EventReader
from bridge.store.records import StoredEvent
from workers.mapping import action_key

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "dead_letters_page",
    "event_actions",
    "event_detail",
    "event_summary",
    "events_page",
    "missing_event",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_DEAD_ACTION_FIELDS = ("key", "rule", "index", "kind", "destination", "status", "last_error", "last_response")


def event_summary(event: StoredEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "status": event.status,
        "occurred_at": event.occurred_at,
        "received_at": format_ms(event.received_at),
        "updated_at": format_ms(event.updated_at),
        "error": event.error,
        "generation": event.generation,
        "runs": event.runs,
    }


def event_actions(event: StoredEvent) -> list[dict[str, Any]]:
    """Every action record of every generation, oldest generation first, each marked with its own."""
    views = []
    for key, record in event.actions.items():
        rule, index = str(record.get("rule", "")), int(record.get("index", 0))
        generation = next(
            (g for g in range(event.generation, -1, -1) if action_key(event.id, rule, index, g) == key), None
        )
        views.append({**record, "key": key, "generation": generation, "current": generation == event.generation})
    return sorted(views, key=lambda view: (view["generation"] or 0, view["rule"], view["index"]))


def _cursor(position: tuple[int, str] | None) -> str | None:
    return None if position is None else encode_cursor(position)


async def events_page(
    reader: EventReader, query: EventQuery, *, limit: int, after: tuple[int, str] | None
) -> dict[str, Any]:
    """``GET /admin/events``: matching events newest first, and the cursor to the next page."""
    page = await find_events(reader, query, limit=limit, after=after)
    return {
        "events": [event_summary(event) for event in page.events],
        "count": len(page.events),
        "next_cursor": _cursor(page.cursor),
    }


async def missing_event(reader: EventReader, event_id: str) -> str:
    """Why ``event_id`` has no record: never received (or past the dedupe window), or received but
    its record expired while its dedupe marker still answers duplicates."""
    marker = await reader.seen(event_id)
    if marker is None:
        return f"no event {event_id!r}: never received, or past the retention window"
    received_ms, left_ms = marker
    return (
        f"event {event_id!r} was received at {format_ms(received_ms)}; its record has expired "
        f"(MAGBRIDGE_RECORD_RETENTION_HOURS), but the id is still answered as a duplicate "
        f"for {left_ms // 1000} s more (MAGBRIDGE_RETENTION_DAYS)"
    )


async def event_detail(reader: EventReader, event_id: str) -> dict[str, Any] | None:
    """``GET /admin/events/{id}``: the envelope, payload, actions, replays and where the event stands."""
    event = await reader.get(event_id)
    if event is None:
        return None
    [dead_at] = await reader.dead_letter_times([event_id])
    [job_due] = await reader.due_times([event_id])
    expires_in = await reader.expires_in_ms(event_id)
    return {
        **event_summary(event),
        "payload": event.payload,
        "actions": event_actions(event),
        "replays": event.replays,
        "dead_letter_at": format_ms(dead_at),
        "job": None if job_due is None else {"id": event.job or None, "due_at": format_ms(job_due)},
        "expires_in_seconds": None if expires_in is None else round(expires_in / 1000),
    }


async def dead_letters_page(
    reader: EventReader, query: EventQuery, *, limit: int, after: tuple[int, str] | None
) -> dict[str, Any]:
    """``GET /admin/dead-letters``: dead letters newest first, each with its failed actions."""
    page = await find_events(reader, query, index="dead", limit=limit, after=after)
    times = await reader.dead_letter_times([event.id for event in page.events])
    letters = []
    for header, dead_at in zip(page.events, times, strict=True):
        event = await reader.get(header.id)
        if event is None:
            continue
        failed = [
            {name: view.get(name) for name in _DEAD_ACTION_FIELDS} | {"attempts": len(view.get("attempts") or [])}
            for view in event_actions(event)
            if view.get("status") == "dead" and view["current"]
        ]
        letters.append({**event_summary(event), "dead_letter_at": format_ms(dead_at), "failed_actions": failed})
    _, total = await reader.index_sizes()
    return {"dead_letters": letters, "count": len(letters), "total": total, "next_cursor": _cursor(page.cursor)}
