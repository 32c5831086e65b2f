"""Magnify Partner API simulator: OAuth token endpoint, motions and their email metrics.

A client's base URL is ``http://host:port/v1/partner`` and its token URL ``http://host:port/oauth2/token``.
API errors use the documented body ``{"type", "message", "detail", "status", "instance",
"validationErrors"}`` (``validationErrors`` on 400 only); token errors use RFC 6749's format.

Accounts: ``MAGNIFY_ACCOUNTS`` names ready-made shapes for ``create_magnify_app(**shape)``: ``small`` (the
demo: a few motions, about a hundred metrics) and ``large`` (a realistic account: 400 motions of very
different sizes, about 40,000 metrics, for the poll benchmark).

Extra control route: ``POST /_sim/append {"motion_id"?: <bare uuid>, "count": n}`` adds ``n`` new metrics
(stamped now) to that motion, or each to a random EXECUTING motion. With ``append_per_second`` the app
does that continuously in the background while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from http import HTTPStatus
from typing import Any, Literal

from aiohttp import web

from bridge.simulators.common import (
    CONTROL_PREFIX,
    SIM_CORE,
    VendorProfile,
    control_error,
    create_sim_app,
    read_json,
)
from bridge.simulators.credentials import MAGNIFY_CLIENT_ID, MAGNIFY_CLIENT_SECRET
from bridge.simulators.magnify_data import MOTION_STATES, MagnifyData, Motion
from bridge.simulators.magnify_oauth import OAuthServer, TokenStore

__all__ = ["MAGNIFY_ACCOUNTS", "MAGNIFY_BACKEND", "MagnifyBackend", "create_magnify_app"]

Order = Literal["oldest_first", "newest_first"]

API_PREFIX = "/v1/partner"
TOKEN_PATH = "/oauth2/token"
ERROR_TYPE = "/errors/motions"
MOTION_ID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MOTION_ID_ERROR = f'motionId: should match pattern "{MOTION_ID_PATTERN.pattern}"'
INVALID_QUERY = "Invalid query parameters provided"
INVALID_MOTION_ID = "Invalid motion ID format"
APPEND_MAX = 100_000
APPEND_TICK_SECONDS = 0.1
METRICS_FROM_MAX = 99_900  # documented; the window is METRICS_FROM_MAX + the largest page, 100,000

# The spec's open questions (bridge/simulators/readings.py); the first answer is the default.
# max_page_size: /motions takes size <= 1000 (its table) or <= 100 (the general notes), else a 400.
READINGS: Mapping[str, tuple[str, ...]] = {"max_page_size": ("1000", "100")}

MAGNIFY_ACCOUNTS: Mapping[str, Mapping[str, Any]] = {
    "small": {"motions": 8, "metrics_per_motion": 15},
    "large": {"motions": 400, "metrics_per_motion": 100, "size_spread": 1.0},
}


class MagnifyBackend:
    """Generated motions and metrics plus the OAuth server; ``reset`` regenerates both from the seed."""

    def __init__(
        self,
        *,
        motions: int,
        metrics_per_motion: int,
        order: Order,
        seed: int,
        oauth: OAuthServer,
        size_spread: float = 0.0,
        metrics_from_max: int = METRICS_FROM_MAX,
    ) -> None:
        self._shape: dict[str, Any] = {
            "motions": motions,
            "metrics_per_motion": metrics_per_motion,
            "seed": seed,
            "size_spread": size_spread,
        }
        self.order = order
        self.oauth = oauth
        self.metrics_from_max = metrics_from_max
        self.data = MagnifyData(**self._shape)

    def reset(self) -> None:
        """Regenerate the seeded data and revoke every token."""
        self.data = MagnifyData(**self._shape)
        self.oauth.tokens.reset()

    def summary(self) -> dict[str, Any]:
        """Counts for ``/_sim/state``."""
        return {
            "motions": len(self.data.motions),
            "metrics": self.data.total_metrics(),
            "tokens_issued": self.oauth.tokens.issued,
        }

    def metrics_page(self, motion: Motion, start: int, size: int) -> list[dict[str, Any]]:
        """``size`` metrics from index ``start`` in the configured order (index 0 = newest for newest_first)."""
        metrics = motion.metrics
        if self.order == "oldest_first":
            return metrics[start : start + size]
        last = len(metrics) - 1
        return [metrics[last - index] for index in range(start, min(start + size, len(metrics)))]


MAGNIFY_BACKEND = web.AppKey("magnify_backend", MagnifyBackend)


def _problem(
    request: web.Request, status: int, message: str, detail: str, validation_errors: list[str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": ERROR_TYPE,
        "message": message,
        "detail": detail,
        "status": status,
        "instance": request.path,
    }
    if status == 400:
        body["validationErrors"] = validation_errors or []
    return body


def _problem_response(
    request: web.Request, status: int, message: str, detail: str, validation_errors: list[str] | None = None
) -> web.Response:
    return web.json_response(_problem(request, status, message, detail, validation_errors), status=status)


def _render_error(request: web.Request, status: int, code: str, message: str) -> dict[str, Any]:
    if request.path == TOKEN_PATH:
        return {"error": code, "error_description": message}
    if status == 500:
        title = "An unknown error occurred on the server"
    else:
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = code
    return _problem(request, status, title, message)


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int, errors: list[str]) -> int:
    """A bounded integer query parameter; problems go to ``errors`` in the documented wording."""
    raw = query.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?\d+", raw):
        errors.append(f"{name}: should be integer")
        return default
    value = int(raw)
    if value < low:
        errors.append(f"{name}: should be >= {low}")
    elif value > high:
        errors.append(f"{name}: should be <= {high}")
    return value


async def _list_motions(request: web.Request) -> web.Response:
    data = request.app[MAGNIFY_BACKEND].data
    errors: list[str] = []
    # Reading max_page_size: the motions table's 1000, or the general notes' "Maximum page size is 100".
    size_max = int(request.app[SIM_CORE].readings["max_page_size"])
    size = _int_param(request.query, "size", 10, 1, size_max, errors)
    start = _int_param(request.query, "from", 0, 0, 100, errors)
    state = request.query.get("state")
    if state is not None and state not in MOTION_STATES:
        errors.append("state: must be equal to one of the allowed values")
    if errors:
        message = "Failed to fetch motions - validation failed"
        return _problem_response(request, 400, message, INVALID_QUERY, errors)
    motions = [motion for motion in data.motions if state is None or motion.state == state]
    page = [motion.to_json() for motion in motions[start : start + size]]
    return web.json_response({"total": len(motions), "data": page})


def _motion_not_found(request: web.Request, motion_id: str) -> web.Response:
    return _problem_response(request, 404, "Motion not found", f"Motion {motion_id} not found")


async def _get_motion(request: web.Request) -> web.Response:
    motion_id = request.match_info["motion_id"]
    if not MOTION_ID_PATTERN.match(motion_id):
        message = "Failed to fetch motion - validation failed"
        return _problem_response(request, 400, message, INVALID_MOTION_ID, [MOTION_ID_ERROR])
    motion = request.app[MAGNIFY_BACKEND].data.by_id.get(motion_id)
    if motion is None:
        return _motion_not_found(request, motion_id)
    return web.json_response(motion.to_json())


async def _email_metrics(request: web.Request) -> web.Response:
    backend = request.app[MAGNIFY_BACKEND]
    motion_id = request.match_info["motion_id"]
    errors: list[str] = []
    valid_id = bool(MOTION_ID_PATTERN.match(motion_id))
    if not valid_id:
        errors.append(MOTION_ID_ERROR)
    start = _int_param(request.query, "from", 0, 0, backend.metrics_from_max, errors)
    size = _int_param(request.query, "size", 10, 1, 100, errors)
    if errors:
        message = "Failed to fetch motion email metrics - validation failed"
        detail = INVALID_QUERY if valid_id else INVALID_MOTION_ID
        return _problem_response(request, 400, message, detail, errors)
    motion = backend.data.by_id.get(motion_id)
    if motion is None:
        return _motion_not_found(request, motion_id)
    if not motion.metrics:
        detail = f"No email metrics available for motion {motion_id}"
        return _problem_response(request, 404, "No email metrics available", detail)
    page = backend.metrics_page(motion, start, size)
    return web.json_response({"total": len(motion.metrics), "data": page})


def _now_ms() -> int:
    return int(time.time() * 1000)


def _append_random(backend: MagnifyBackend, count: int) -> dict[str, int]:
    """``count`` metrics, each to a random EXECUTING motion; ``{bare motion id: metrics added}``."""
    executing = backend.data.executing()
    added: dict[str, int] = {}
    if not executing:
        return added
    for _ in range(count):
        motion = backend.data.rng.choice(executing)
        backend.data.append(motion, 1, _now_ms())
        added[motion.id] = added.get(motion.id, 0) + 1
    return added


async def _append(request: web.Request) -> web.Response:
    backend = request.app[MAGNIFY_BACKEND]
    try:
        body = await read_json(request)
    except ValueError as exc:
        return control_error(str(exc))
    count = body.get("count") if isinstance(body, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= APPEND_MAX:
        return control_error(f"count must be an integer between 1 and {APPEND_MAX}")
    motion_id = body.get("motion_id")
    if motion_id is None:
        added = _append_random(backend, count)
        if not added:
            return control_error("no EXECUTING motion to append metrics to", 409)
    else:
        motion = backend.data.by_id.get(motion_id) if isinstance(motion_id, str) else None
        if motion is None:
            return control_error(f"unknown motion_id {motion_id!r} (give the bare UUID)", 404)
        backend.data.append(motion, count, _now_ms())
        added = {motion.id: count}
    return web.json_response({"appended": added, "metrics": backend.data.total_metrics()})


async def _append_forever(backend: MagnifyBackend, per_second: float) -> None:
    """Append ``per_second`` metrics a second, in small ticks so the rate is smooth."""
    due = 0.0
    last = time.monotonic()
    while True:
        await asyncio.sleep(APPEND_TICK_SECONDS)
        now = time.monotonic()
        due += (now - last) * per_second
        last = now
        count = int(due)
        if count:
            _append_random(backend, count)
            due -= count


def _appender(per_second: float) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` hook running :func:`_append_forever` while the app runs."""

    async def run_appender(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_append_forever(app[MAGNIFY_BACKEND], per_second))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run_appender


def create_magnify_app(
    *,
    client_id: str = MAGNIFY_CLIENT_ID,
    client_secret: str = MAGNIFY_CLIENT_SECRET,
    token_ttl_seconds: float = 3600,
    motions: int = 20,
    metrics_per_motion: int = 50,
    order: Order = "oldest_first",
    seed: int = 0,
    append_per_second: float = 0,
    size_spread: float = 0.0,
    metrics_from_max: int = METRICS_FROM_MAX,
) -> web.Application:
    """A Magnify Partner API simulator with ``motions`` seeded motions of ``metrics_per_motion`` metrics each.

    DRAFT and SCHEDULED motions have no metrics. ``order`` says whether a motion's metrics are listed
    oldest first or newest first. ``size_spread`` > 0 varies the motions' sizes (log-normal, mean
    ``metrics_per_motion``; 1.0 gives a few motions five times the mean). ``metrics_from_max`` is the
    documented 99,900; tests lower it to reach the end of the 100,000-metric window cheaply.
    """
    if order not in ("oldest_first", "newest_first"):
        raise ValueError(f"order must be oldest_first or newest_first, not {order!r}")
    if motions < 0 or metrics_per_motion < 0 or size_spread < 0:
        raise ValueError("motions, metrics_per_motion and size_spread must be >= 0")
    if metrics_from_max < 0:
        raise ValueError("metrics_from_max must be >= 0")
    oauth = OAuthServer(client_id, client_secret, TokenStore(token_ttl_seconds))
    backend = MagnifyBackend(
        motions=motions,
        metrics_per_motion=metrics_per_motion,
        order=order,
        seed=seed,
        oauth=oauth,
        size_spread=size_spread,
        metrics_from_max=metrics_from_max,
    )
    profile = VendorProfile(
        name="magnify",
        render_error=_render_error,
        authorize=oauth.authorize,
        public_paths=frozenset({TOKEN_PATH}),
        readings=READINGS,
    )
    app = create_sim_app(profile, backend, seed=seed)
    app[MAGNIFY_BACKEND] = backend
    if append_per_second > 0:
        app.cleanup_ctx.append(_appender(append_per_second))
    app.router.add_post(TOKEN_PATH, oauth.token_endpoint)
    app.router.add_get(API_PREFIX + "/motions", _list_motions)
    app.router.add_get(API_PREFIX + "/motions/{motion_id}", _get_motion)
    app.router.add_get(API_PREFIX + "/motions/{motion_id}/email-metrics", _email_metrics)
    app.router.add_post(CONTROL_PREFIX + "append", _append)
    return app
