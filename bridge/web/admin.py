"""The admin API: list events, show one with its actions and history, list dead letters, replay.

Every route needs ``Authorization: Bearer $MAGBRIDGE_ADMIN_TOKEN`` (checked in constant time); a
missing or wrong token is a 401, and without a configured token the whole API answers 503. Errors
are raised as ``RequestRejected`` and rendered by the problem middleware. The bodies are built by
``bridge.store.views``, which ``magbridge events`` and ``magbridge dead-letters`` print too.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import structlog
from aiohttp import web
from pydantic import ValidationError

from bridge.store.queries import EventQuery, InvalidQuery, decode_cursor, parse_instant
from bridge.store.replay import ReplayRequest, SelectionTooLarge, run_replay
from bridge.store.views import DEFAULT_LIMIT, MAX_LIMIT, dead_letters_page, event_detail, events_page, missing_event
from bridge.web.json_bounds import JsonBounds, decode_json
from bridge.web.state import READER, REDIS, SETTINGS
from config.errors import RequestRejected

__all__ = ["MAX_LIMIT", "admin_routes"]

_log = structlog.get_logger("magbridge.admin")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminUnauthorized(RequestRejected):
    """401 with the challenge RFC 6750 asks for."""

    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="magbridge-admin"'}

    def __init__(self, detail: str):
        super().__init__(401, "Unauthorized", detail)


def _authorize(request: web.Request) -> None:
    token = request.app[SETTINGS].admin_token
    if token is None or not token.get_secret_value():
        raise RequestRejected(
            503, "Admin API disabled", "MAGBRIDGE_ADMIN_TOKEN is not set, so the admin API is switched off"
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AdminUnauthorized("the admin token is missing: send Authorization: Bearer <MAGBRIDGE_ADMIN_TOKEN>")
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise AdminUnauthorized("the admin token is wrong")


def _admin(handler: _Handler) -> _Handler:
    """Check the bearer token before anything else of the request is looked at."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        _authorize(request)
        _log.info("admin request", method=request.method, path=request.path)
        return await handler(request)

    return guarded


def _invalid(parameter: str, message: str) -> RequestRejected:
    return RequestRejected(
        400, "Invalid parameter", f"{parameter}: {message}", errors=[{"field": parameter, "message": message}]
    )


def _params(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    for name in request.query:
        if name not in allowed:
            raise _invalid(name, f"unknown parameter; this route takes {', '.join(allowed)}")
        if len(request.query.getall(name)) > 1:
            raise _invalid(name, "given more than once")
    return dict(request.query)


def _limit(params: dict[str, str]) -> int:
    raw = params.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise _invalid("limit", f"an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _non_empty(params: dict[str, str], name: str) -> str | None:
    """A filter that is given must say something: ``?status=`` is a mistake, not "any"."""
    if name in params and not params[name]:
        raise InvalidQuery(name, "must not be empty; leave the parameter out to match any")
    return params.get(name) or None


def _query(params: dict[str, str]) -> EventQuery:
    try:
        return EventQuery(
            source=params.get("source") or None,
            type=params.get("type") or None,
            status=_non_empty(params, "status"),
            since_ms=parse_instant(params["since"], "since") if "since" in params else None,
            until_ms=parse_instant(params["until"], "until") if "until" in params else None,
        )
    except InvalidQuery as exc:
        raise _invalid(exc.parameter, exc.message) from None


def _cursor(params: dict[str, str]) -> tuple[int, str] | None:
    if "cursor" not in params:
        return None
    try:
        return decode_cursor(params["cursor"])
    except InvalidQuery as exc:
        raise _invalid(exc.parameter, exc.message) from None


@_admin
async def list_events(request: web.Request) -> web.Response:
    params = _params(request, ("source", "type", "status", "since", "until", "limit", "cursor"))
    query, limit, after = _query(params), _limit(params), _cursor(params)
    return web.json_response(await events_page(request.app[READER], query, limit=limit, after=after))


@_admin
async def get_event(request: web.Request) -> web.Response:
    event_id = request.match_info["event_id"]
    detail = await event_detail(request.app[READER], event_id)
    if detail is None:  # the detail says whether the id was seen and only its record expired
        raise RequestRejected(404, "Event not found", await missing_event(request.app[READER], event_id))
    return web.json_response(detail)


@_admin
async def list_dead_letters(request: web.Request) -> web.Response:
    params = _params(request, ("source", "type", "limit", "cursor"))
    query, limit, after = _query(params), _limit(params), _cursor(params)
    return web.json_response(await dead_letters_page(request.app[READER], query, limit=limit, after=after))


async def _read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise RequestRejected(
            415, "Unsupported media type", f"Content-Type must be application/json, got {request.content_type!r}"
        )
    raw = await request.read()  # bounded by the application's client_max_size (413 beyond it)
    # The same bounded parser as the webhook: depth, sizes and number forms are checked.
    return decode_json(raw, JsonBounds())


def _validation_problem(exc: ValidationError) -> RequestRejected:
    errors = [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "$",
            "message": error["msg"].removeprefix("Value error, "),
        }
        for error in exc.errors()
    ]
    detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    return RequestRejected(400, "Invalid replay request", detail, errors=errors)


@_admin
async def replay(request: web.Request) -> web.Response:
    try:
        body = ReplayRequest.model_validate(await _read_json(request))
    except ValidationError as exc:
        raise _validation_problem(exc) from None
    try:
        report = await run_replay(
            request.app[REDIS], body, by="admin-api", batch_size=request.app[SETTINGS].worker_batch_size
        )
    except InvalidQuery as exc:
        raise _invalid(exc.parameter, exc.message) from None
    except SelectionTooLarge as exc:
        raise RequestRejected(400, "Selection too large", str(exc)) from None
    return web.json_response(report.as_dict(), status=202)


admin_routes = [
    web.get("/admin/events", list_events, allow_head=False),
    web.get("/admin/events/{event_id:.+}", get_event, allow_head=False),
    web.get("/admin/dead-letters", list_dead_letters, allow_head=False),
    web.post("/admin/replay", replay),
]
