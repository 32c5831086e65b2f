"""``POST /console/replay/preview`` (a dry run) and ``POST /console/replay``: the admin API's replay
(``bridge.store.replay.run_replay``, recorded as ``by: console``) behind two forms.

A selection is either the dead letters ticked on the page (``event_id``, repeated) or every dead
letter that matches the page's filter (``scope=all`` with ``source`` and ``type``). The preview runs
the replay with ``dry_run`` and shows what it would queue; its form carries the same selection to
the replay itself, which redirects to the dead letters page, following the replayed events.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import MultiDict
from pydantic import ValidationError

from bridge.store.queries import InvalidQuery
from bridge.store.replay import ReplayReport, ReplayRequest, SelectionTooLarge, run_replay
from bridge.web.console.auth import redirect, signed_in
from bridge.web.console.csrf import checked_form
from bridge.web.console.dead_letters import WATCHED
from bridge.web.console.sessions import Session
from bridge.web.console.state import CONSOLE
from bridge.web.state import REDIS, SETTINGS
from config.errors import RequestRejected

__all__ = ["replay", "replay_preview"]


def _selection(form: MultiDict[str]) -> dict[str, Any]:
    if form.get("scope") == "all":
        return {"dead_letters": True, "source": form.get("source") or None, "type": form.get("type") or None}
    event_ids = list(dict.fromkeys(form.getall("event_id", [])))
    if not event_ids:
        raise RequestRejected(
            400, "Nothing selected", "Select at least one dead letter, or replay every one that matches the filter."
        )
    return {"event_ids": event_ids}


async def _run(request: web.Request, selection: dict[str, Any], *, dry_run: bool, force: bool) -> ReplayReport:
    try:
        body = ReplayRequest.model_validate({**selection, "dry_run": dry_run, "force": force})
    except ValidationError as exc:
        detail = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
        raise RequestRejected(400, "Invalid replay request", detail) from None
    try:
        return await run_replay(
            request.config_dict[REDIS], body, by="console", batch_size=request.config_dict[SETTINGS].worker_batch_size
        )
    except InvalidQuery as exc:
        raise RequestRejected(400, "Invalid parameter", f"{exc.parameter}: {exc.message}") from None
    except SelectionTooLarge as exc:
        raise RequestRejected(400, "Selection too large", str(exc)) from None


@signed_in
async def replay_preview(request: web.Request, session: Session) -> web.StreamResponse:
    form = await checked_form(request, session.csrf)
    selection = _selection(form)
    report = await _run(request, selection, dry_run=True, force=False)
    return request.app[CONSOLE].pages.render(
        "replay.html",
        nav="dead-letters",
        session=session,
        selection=selection,
        report=report.as_dict(),
        back=form.get("back", ""),
    )


@signed_in
async def replay(request: web.Request, session: Session) -> web.StreamResponse:
    form = await checked_form(request, session.csrf)
    selection = _selection(form)
    report = await _run(request, selection, dry_run=False, force=form.get("force") == "on")
    replayed = report.ids("replayed")
    if form.get("back") == "event" and len(selection.get("event_ids") or []) == 1:
        return redirect(f"/console/events/{quote(selection['event_ids'][0], safe='')}?replayed={len(replayed)}")
    query: list[tuple[str, str]] = [("replayed", str(len(replayed)))]
    query += [("watch", event_id) for event_id in replayed[:WATCHED]]
    return redirect("/console/dead-letters?" + urlencode(query))
