"""MagicBell API v2 simulator: the Broadcasts endpoints.

A real client's base URL is ``https://api.magicbell.com/v2``; here the routes are at the root, so the
base URL is just ``http://host:port``. Errors use the vendor's envelope
``{"errors": [{"code": ..., "message": ...}]}``.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from aiohttp import web
from yarl import URL

from bridge.simulators.common import (
    SIM_CORE,
    VendorProfile,
    bearer_authorizer,
    create_sim_app,
    iso_utc,
    json_response,
    read_json,
    vendor_error,
)
from bridge.simulators.credentials import MAGICBELL_TOKEN
from bridge.simulators.magicbell_validation import validate_broadcast

__all__ = ["MAGICBELL_STORE", "BroadcastStore", "create_magicbell_app"]

LIST_LIMIT_DEFAULT = 20
LIST_LIMIT_MAX = 100
# The fields a broadcast keeps; anything else in a request body is ignored, as the schema does not list it.
BROADCAST_FIELDS = (
    "title",
    "content",
    "action_url",
    "category",
    "topic",
    "custom_attributes",
    "recipients",
    "overrides",
)


class BroadcastStore:
    """Broadcasts in creation order, and how many were created (the side effects)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self.rng = random.Random(seed)
        self.broadcasts: dict[str, dict[str, Any]] = {}
        self.side_effects = 0

    def reset(self) -> None:
        """Forget every broadcast."""
        self.rng = random.Random(self._seed)
        self.broadcasts.clear()
        self.side_effects = 0

    def summary(self) -> dict[str, Any]:
        """Counts for ``/_sim/state``."""
        return {"broadcasts": len(self.broadcasts), "side_effects": self.side_effects}

    def new_id(self) -> str:
        """A version 4 UUID from the seeded generator, so runs are reproducible."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def newest_first(self) -> list[str]:
        """Broadcast ids, the most recently created first (the list order)."""
        return list(reversed(self.broadcasts))


MAGICBELL_STORE = web.AppKey("magicbell_store", BroadcastStore)
# The reference documents neither ``Idempotency-Key`` nor what a create with an existing ``id`` gets.
READINGS: dict[str, tuple[str, ...]] = {
    # honoured: a resend with the same key replays the first answer; ignored: the key changes nothing.
    "idempotency": ("honoured", "ignored"),
    # A create with an existing id: 409 Conflict, 422 with a validation error, or the existing
    # broadcast answered again (201, nothing created).
    "repeated_id": ("409", "422", "replay"),
}


def _render_error(request: web.Request, status: int, code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _errors(status: int, code: str, *messages: str) -> web.Response:
    """One error object per message, e.g. one per validation problem."""
    body = {"errors": [{"code": code, "message": message} for message in messages]}
    return web.json_response(body, status=status)


def _new_broadcast(store: BroadcastStore, body: dict[str, Any]) -> dict[str, Any]:
    broadcast: dict[str, Any] = {"id": body.get("id") or store.new_id()}
    broadcast.update({name: body.get(name) for name in BROADCAST_FIELDS})
    broadcast["created_at"] = iso_utc()
    broadcast["status"] = {
        "status": "enqueued",
        "summary": {"total": len(body["recipients"]), "failures": 0},
        "errors": [],
    }
    return broadcast


def _failed_recipient(recipient: Any) -> str | None:
    """Why a recipient fails, or ``None``: an e-mail under the reserved ``.invalid`` domain (RFC 2606)
    stands for an address the vendor cannot deliver to, so tests can make some recipients fail."""
    if not isinstance(recipient, dict):
        return None
    email = recipient.get("email")
    if isinstance(email, str) and email.lower().endswith(".invalid"):
        return f"{email}: undeliverable address"
    return None


def _processed(broadcast: dict[str, Any]) -> dict[str, Any]:
    """The broadcast as the vendor reports it once processed: ``status`` ``processed``, the failed
    recipients counted in ``summary.failures`` with one ``errors`` item each (the spec's status object).
    The create answer says ``enqueued``; a later fetch or list sees the broadcast processed."""
    recipients = broadcast.get("recipients") or []
    problems = [problem for problem in map(_failed_recipient, recipients) if problem is not None]
    broadcast["status"] = {
        "status": "processed",
        "summary": {"total": len(recipients), "failures": len(problems)},
        "errors": [{"message": problem} for problem in problems],
    }
    return broadcast


async def _create(request: web.Request) -> web.Response:
    store = request.app[MAGICBELL_STORE]
    try:
        body = await read_json(request)
    except ValueError:
        return vendor_error(request, 400, "bad_request", "request body must be JSON")
    if not isinstance(body, dict):
        return vendor_error(request, 400, "bad_request", "request body must be a JSON object")
    problems = validate_broadcast(body)
    if problems:
        return _errors(422, "validation_error", *problems)
    broadcast_id = body.get("id")
    existing = _find(store, broadcast_id) if isinstance(broadcast_id, str) else None
    if existing is not None:
        return _repeated_id(request, existing)
    broadcast = _new_broadcast(store, body)
    store.broadcasts[broadcast["id"].lower()] = broadcast
    store.side_effects += 1
    return json_response(broadcast, status=201)


def _repeated_id(request: web.Request, existing: dict[str, Any]) -> web.Response:
    """A create with the id of an existing broadcast: the spec does not say, so each reading is served.
    Ids are unique (``GET /broadcasts/{id}`` fetches one broadcast), so none of them creates another."""
    answer = request.app[SIM_CORE].readings["repeated_id"]
    message = f"broadcast {existing['id']} already exists"
    if answer == "422":
        return _errors(422, "validation_error", f"id: {message}")
    if answer == "replay":
        return json_response(existing, status=201)
    return vendor_error(request, 409, "conflict", message)


def _find(store: BroadcastStore, broadcast_id: str) -> dict[str, Any] | None:
    # UUIDs compare case-insensitively.
    return store.broadcasts.get(broadcast_id.lower())


async def _fetch(request: web.Request) -> web.Response:
    broadcast_id = request.match_info["broadcast_id"]
    broadcast = _find(request.app[MAGICBELL_STORE], broadcast_id)
    if broadcast is None:
        return vendor_error(request, 404, "not_found", f"broadcast {broadcast_id} not found")
    return web.json_response(_processed(broadcast))


def _parse_limit(raw: str | None) -> int | None:
    if raw is None:
        return LIST_LIMIT_DEFAULT
    try:
        limit = int(raw)
    except ValueError:
        return None
    return limit if 1 <= limit <= LIST_LIMIT_MAX else None


def _page_bounds(ids: list[str], limit: int, after: str | None, before: str | None) -> tuple[int, int]:
    """``[start, end)`` of the page in ``ids``; ``KeyError`` for an unknown cursor."""
    if after is not None:
        start = _index(ids, after) + 1
        return start, min(len(ids), start + limit)
    if before is not None:
        end = _index(ids, before)
        return max(0, end - limit), end
    return 0, min(len(ids), limit)


def _index(ids: list[str], cursor: str) -> int:
    try:
        return ids.index(cursor.lower())
    except ValueError:
        raise KeyError(cursor) from None


async def _list(request: web.Request) -> web.Response:
    store = request.app[MAGICBELL_STORE]
    limit = _parse_limit(request.query.get("limit"))
    after = request.query.get("starting_after") or None
    before = request.query.get("ending_before") or None
    problems = []
    if limit is None:
        problems.append(f"limit: must be an integer between 1 and {LIST_LIMIT_MAX}")
    if after is not None and before is not None:
        problems.append("starting_after: cannot be combined with ending_before")
    if problems or limit is None:
        return _errors(422, "validation_error", *problems)
    ids = store.newest_first()
    try:
        start, end = _page_bounds(ids, limit, after, before)
    except KeyError as exc:
        name = "starting_after" if after is not None else "ending_before"
        return _errors(422, "validation_error", f"{name}: unknown broadcast {exc.args[0]}")
    page = [_processed(store.broadcasts[broadcast_id]) for broadcast_id in ids[start:end]]
    return web.json_response({"data": page, "links": _links(request.url.with_query(None), ids, start, end, limit)})


def _links(base: URL, ids: list[str], start: int, end: int, limit: int) -> dict[str, str | None]:
    """``first``/``next``/``prev`` URLs for the page ``ids[start:end]``; ``None`` at either end."""

    def page_from(index: int) -> str:
        if index == 0:
            return str(base.with_query(limit=limit))
        return str(base.with_query(limit=limit, starting_after=ids[index - 1]))

    if start == 0:
        prev = None
    elif start < len(ids):
        prev = str(base.with_query(limit=limit, ending_before=ids[start]))
    else:  # an empty page past the last item
        prev = page_from(max(0, start - limit))
    return {"first": page_from(0), "next": page_from(end) if end < len(ids) else None, "prev": prev}


def create_magicbell_app(*, token: str = MAGICBELL_TOKEN, seed: int = 0) -> web.Application:
    """A MagicBell v2 simulator; requests need ``Authorization: Bearer <token>``."""
    store = BroadcastStore(seed)
    profile = VendorProfile(
        name="magicbell", render_error=_render_error, authorize=bearer_authorizer(token), readings=READINGS
    )
    app = create_sim_app(profile, store, seed=seed)
    app[MAGICBELL_STORE] = store
    app.router.add_post("/broadcasts", _create)
    app.router.add_get("/broadcasts", _list)
    app.router.add_get("/broadcasts/{broadcast_id}", _fetch)
    return app
