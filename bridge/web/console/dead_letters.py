"""``GET /console/dead-letters``: what failed for good, a page at a time, to select and replay.

The rows are the admin API's (``bridge.store.views.dead_letters_page``), filtered by source and type.
After a replay the page follows the replayed events (``?watch=``, up to ``WATCHED``) with their
current status, and the console's script refreshes it until they are final: they leave the list at
once, and come back only if they fail again.
"""

from __future__ import annotations

from aiohttp import web

from bridge.store.queries import EventQuery, InvalidQuery
from bridge.store.records import FINAL_STATUSES
from bridge.store.views import dead_letters_page
from bridge.web.console.auth import signed_in
from bridge.web.console.events import PAGE, SOURCES, cursor_of, filters_of
from bridge.web.console.sessions import Session
from bridge.web.console.state import CONSOLE
from bridge.web.state import READER
from config.errors import RequestRejected

__all__ = ["WATCHED", "dead_letters"]

WATCHED = 20


@signed_in
async def dead_letters(request: web.Request, session: Session) -> web.StreamResponse:
    reader, console = request.config_dict[READER], request.app[CONSOLE]
    filters = filters_of(request, ("source", "type"))
    try:
        query = EventQuery(source=filters["source"] or None, type=filters["type"] or None)
    except InvalidQuery as exc:
        raise RequestRejected(400, "Invalid parameter", f"{exc.parameter}: {exc.message}") from None
    body = await dead_letters_page(reader, query, limit=PAGE, after=cursor_of(request))
    watch = list(dict.fromkeys(request.query.getall("watch", [])))[:WATCHED]
    watched = [
        (event_id, header.status if header is not None else "gone")
        for event_id, header in zip(watch, await reader.headers(watch), strict=True)
    ]
    return console.pages.render(
        "dead_letters.html",
        nav="dead-letters",
        session=session,
        filters=filters,
        letters=body["dead_letters"],
        total=body["total"],
        next_cursor=body["next_cursor"],
        continued="cursor" in request.query,
        replayed=request.query.get("replayed", ""),
        watched=watched,
        settled=all(status in FINAL_STATUSES or status == "gone" for _, status in watched),
        sources=SOURCES,
    )
