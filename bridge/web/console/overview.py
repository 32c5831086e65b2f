"""``GET /console/``: the overview an operator who is paged looks at first.

Events in and out per minute over the last hour (``bridge.store.throughput``), the queue and the dead
letters (the same snapshot ``/metrics`` reads, ``bridge.web.metrics.read_snapshot``), each
destination's gate (``destinations``) and the Magnify poll's last cycle (``magnify``). A handful of
round trips, each bounded: counts come from indexes and small hashes, never from walking events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from bridge.store.throughput import Minute, per_minute
from bridge.web.console.auth import signed_in
from bridge.web.console.destinations import read_destinations
from bridge.web.console.magnify import read_poll_summary
from bridge.web.console.sessions import Session
from bridge.web.console.state import CONSOLE
from bridge.web.metrics import read_snapshot
from bridge.web.state import READER, REDIS
from config.errors import StoreUnavailable

__all__ = ["overview"]

_MINUTES = 60
_CHART_HEIGHT = 120
_BAR = 10  # width of one minute in the chart, in SVG units


@dataclass(frozen=True, slots=True)
class Bar:
    """One minute of the chart: the heights of its two bars, and what its tooltip says."""

    x: int
    received: int
    out: int
    received_height: int
    out_height: int
    minute: Minute


def _bars(minutes: list[Minute]) -> tuple[list[Bar], int]:
    peak = max([1, *(max(m.received, m.out) for m in minutes)])
    scale = (_CHART_HEIGHT - 4) / peak
    bars = [
        Bar(i * _BAR, m.received, m.out, round(m.received * scale), round(m.out * scale), m)
        for i, m in enumerate(minutes)
    ]
    return bars, peak


def _received_by_source(counters: dict[str, str]) -> dict[str, int]:
    totals = {}
    for name, value in counters.items():
        series, _, labels = name.partition("|")
        if series == "received" and labels.startswith("source="):
            totals[labels.removeprefix("source=")] = int(value)
    return dict(sorted(totals.items()))


@signed_in
async def overview(request: web.Request, session: Session) -> web.StreamResponse:
    redis, console = request.config_dict[REDIS], request.app[CONSOLE]
    now = int(time.time() * 1000)
    snapshot = await read_snapshot(redis, request.config_dict[READER])
    if snapshot is None:
        raise StoreUnavailable("redis did not answer the overview's snapshot")
    minutes = await per_minute(redis, minutes=_MINUTES, now_ms=now)
    bars, peak = _bars(minutes)
    last = minutes[-2]  # the last whole minute; the current one is still filling
    oldest = snapshot.oldest_due_ms
    return console.pages.render(
        "overview.html",
        nav="overview",
        session=session,
        now_ms=now,
        snapshot=snapshot,
        oldest_age_s=max(0.0, (now - oldest) / 1000) if oldest is not None else None,
        last_minute=last,
        current_minute=minutes[-1],
        bars=bars,
        peak=peak,
        chart_width=_MINUTES * _BAR,
        chart_height=_CHART_HEIGHT,
        received=_received_by_source(snapshot.counters),
        destinations=await read_destinations(redis, console.settings, now),
        poll=await read_poll_summary(redis, snapshot.gauges),
        magnify_enabled=console.settings.magnify_enabled,
    )
