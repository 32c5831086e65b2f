"""``GET /console/events`` (filters, cursor pages) and ``GET /console/events/{id}`` (one event in full).

The list is the admin API's query (``bridge.store.queries.find_events``) and row (``views.event_summary``):
newest first, at most ``PAGE`` rows, looking through at most ``BUDGET`` index entries per page, so a
filter that matches little still answers at once, with a link that goes on looking. The counts come
from the index (``ZCARD``, ``ZCOUNT`` over the time range). The detail is the admin API's body
(``views.event_detail``) with a timeline put together from it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.store.queries import (
    EventQuery,
    InvalidQuery,
    Page,
    decode_cursor,
    encode_cursor,
    find_events,
    parse_instant,
)
from bridge.store.records import EVENT_STATUSES
from bridge.store.views import event_detail, event_summary, missing_event
from bridge.web.console.auth import signed_in
from bridge.web.console.sessions import Session
from bridge.web.console.state import CONSOLE
from bridge.web.state import READER
from config.errors import RequestRejected

__all__ = ["BUDGET", "PAGE", "SOURCES", "cursor_of", "event_page", "events_page", "filters_of", "query_of", "timeline"]

PAGE = 50
BUDGET = 1000
SOURCES = ("magnews", "magnify")
_FILTERS = ("source", "type", "status", "since", "until")


def filters_of(request: web.Request, names: tuple[str, ...] = _FILTERS) -> dict[str, str]:
    """The filter fields of the query string, trimmed; an empty field means "any" in a form."""
    return {name: request.query.get(name, "").strip()[:200] for name in names}


def query_of(filters: dict[str, str]) -> EventQuery:
    """``InvalidQuery`` names the field that cannot be used."""
    since, until = filters.get("since"), filters.get("until")
    return EventQuery(
        source=filters.get("source") or None,
        type=filters.get("type") or None,
        status=filters.get("status") or None,
        since_ms=parse_instant(since, "since") if since else None,
        until_ms=parse_instant(until, "until") if until else None,
    )


def cursor_of(request: web.Request) -> tuple[int, str] | None:
    raw = request.query.get("cursor")
    try:
        return decode_cursor(raw) if raw else None
    except InvalidQuery as exc:
        raise RequestRejected(400, "Invalid parameter", f"cursor: {exc.message}") from None


@signed_in
async def events_page(request: web.Request, session: Session) -> web.StreamResponse:
    reader, console = request.config_dict[READER], request.app[CONSOLE]
    filters = filters_of(request)
    after = cursor_of(request)
    error, page, query = "", Page([], None, 0), None
    try:
        query = query_of(filters)
    except InvalidQuery as exc:
        error = f"{exc.parameter}: {exc.message}"
    if query is not None:
        page = await find_events(reader, query, limit=PAGE, after=after, budget=BUDGET)
    stored, _ = await reader.index_sizes()
    in_range = None
    if query is not None and (query.since_ms is not None or query.until_ms is not None):
        in_range = await reader.count_between("events", min_ms=query.since_ms, max_ms=query.until_ms)
    return console.pages.render(
        "events.html",
        status=400 if error else 200,
        nav="events",
        session=session,
        filters=filters,
        error=error,
        rows=[event_summary(event) for event in page.events],
        next_cursor=encode_cursor(page.cursor) if page.cursor else None,
        scanned=page.scanned,
        continued=after is not None,
        stored=stored,
        in_range=in_range,
        sources=SOURCES,
        statuses=EVENT_STATUSES,
        page_size=PAGE,
    )


def timeline(detail: dict[str, Any]) -> list[dict[str, str]]:
    """What happened to the event, oldest first: receipt, every attempt, replays, the dead letter."""
    entries = [{"at": detail["received_at"], "what": "received", "detail": f"from {detail['source']}"}]
    for action in detail["actions"]:
        label = str(action.get("kind") or action.get("destination") or "?")
        for attempt in action.get("attempts") or []:
            outcome = str(attempt.get("outcome", ""))
            status = f" HTTP {attempt['status']}" if attempt.get("status") else ""
            note = attempt.get("error") or attempt.get("note") or ""
            took = f" in {attempt['ms']} ms" if attempt.get("ms") is not None else ""
            entries.append({"at": attempt.get("at", ""), "what": f"{label}: {outcome}{status}{took}", "detail": note})
    for replay in detail["replays"]:
        forced = ", forced" if replay.get("force") else ""
        entries.append(
            {
                "at": replay.get("at", ""),
                "what": f"replayed by {replay.get('by', '?')}",
                "detail": f"{replay.get('mode')}{forced}",
            }
        )
    if detail["dead_letter_at"]:
        entries.append({"at": detail["dead_letter_at"], "what": "became a dead letter", "detail": detail["error"]})
    return sorted(entries, key=lambda entry: entry["at"] or "")


@signed_in
async def event_page(request: web.Request, session: Session) -> web.StreamResponse:
    event_id = request.match_info["event_id"]
    detail = await event_detail(request.config_dict[READER], event_id)
    if detail is None:
        raise RequestRejected(404, "Event not found", await missing_event(request.config_dict[READER], event_id[:200]))
    return request.app[CONSOLE].pages.render(
        "event.html",
        nav="events",
        session=session,
        event=detail,
        timeline=timeline(detail),
        replayed=request.query.get("replayed", ""),
    )
