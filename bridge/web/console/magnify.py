"""``GET /console/magnify``: the Magnify poll: its last cycle, and each motion's checkpoint.

The last cycle comes from ``keys.MAGNIFY_LAST_CYCLE`` (written by whichever worker polled), the lag
and unreachable motions from the bridge-wide gauges, the credentials from ``keys.MAGNIFY_AUTH``. The
checkpoints (``workers.magnify.checkpoints``, one hash field per motion) are shown a page at a time
with ``HSCAN``, so the page costs the same with ten motions or ten thousand.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from bridge.store import keys
from bridge.store.records import text
from bridge.web.console.auth import signed_in
from bridge.web.console.sessions import Session
from bridge.web.console.state import CONSOLE
from bridge.web.state import REDIS
from config.errors import RequestRejected
from workers.magnify.checkpoints import Checkpoint

__all__ = ["PollSummary", "magnify_page", "read_poll_summary"]

_PAGE = 50


@dataclass(frozen=True, slots=True)
class PollSummary:
    """What the overview and the Magnify page say about the poll."""

    last_cycle: dict[str, Any] | None
    auth: dict[str, Any] | None
    lag_seconds: float | None
    unreachable: float | None
    motions: int


def _json(raw: bytes | str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text(raw)) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _gauge(gauges: dict[str, str], name: str) -> float | None:
    try:
        return float(gauges[name]) if name in gauges else None
    except ValueError:
        return None


async def read_poll_summary(redis: aioredis.Redis, gauges: dict[str, str]) -> PollSummary:
    """The poll's figures; ``gauges``: the ``keys.GAUGES`` hash as the metrics snapshot read it."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.MAGNIFY_LAST_CYCLE)
        pipe.get(keys.MAGNIFY_AUTH)
        pipe.hlen(keys.MAGNIFY_CHECKPOINTS)
        cycle, auth, motions = await pipe.execute()
    return PollSummary(
        last_cycle=_json(cycle),
        auth=_json(auth),
        lag_seconds=_gauge(gauges, "magnify_lag_seconds"),
        unreachable=_gauge(gauges, "magnify_motions_unlisted"),
        motions=int(motions),
    )


def _cursor(raw: str | None) -> int:
    if raw is None:
        return 0
    if not (raw.isascii() and raw.isdigit()):
        raise RequestRejected(400, "Invalid parameter", "cursor: not a cursor this page gave out")
    return int(raw)


@signed_in
async def magnify_page(request: web.Request, session: Session) -> web.StreamResponse:
    redis, console = request.config_dict[REDIS], request.app[CONSOLE]
    cursor = _cursor(request.query.get("cursor"))
    next_cursor, raw = await redis.hscan(keys.MAGNIFY_CHECKPOINTS, cursor, count=_PAGE)
    motions = sorted(((text(mid), Checkpoint.from_json(value)) for mid, value in raw.items()), key=lambda m: m[0])
    gauges = {text(k): text(v) for k, v in (await redis.hgetall(keys.GAUGES)).items()}  # type: ignore[misc]
    return console.pages.render(
        "magnify.html",
        nav="magnify",
        session=session,
        now_ms=int(time.time() * 1000),
        poll=await read_poll_summary(redis, gauges),
        motions=motions,
        next_cursor=int(next_cursor) or None,
        first_page=cursor == 0,
        enabled=console.settings.magnify_enabled,
        poll_seconds=console.settings.magnify_poll_seconds,
    )
