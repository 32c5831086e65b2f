"""The demo end to end: it finishes, and its summary agrees with the simulators' records."""

from __future__ import annotations

import io

import redis.asyncio as aioredis

from bridge.cli.demo import run_demo
from tests.support.service import SettingsFactory


async def test_demo_runs_to_completion_and_matches_the_simulators(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    out = io.StringIO()
    summary = await run_demo(make_settings(), events=120, out=out, timeout=60)
    assert summary.consistent, out.getvalue()
    assert summary.sent == summary.accepted == 120
    assert summary.duplicates == summary.resent == 12
    assert sum(summary.statuses.values()) == 120
    assert summary.statuses["delivered"] > 0 and summary.statuses["ignored"] > 0
    assert summary.broadcasts_by_bridge == summary.broadcasts_at_magicbell > 0
    assert "CONSISTENT" in out.getvalue()
    # Magnify: every metric the simulator holds (some appended while the demo ran) ingested once,
    # mapped by the rules into Magnews merges (and ops broadcasts), each one at the simulator.
    assert summary.magnify_metrics == summary.magnify_ingested > summary.magnify_appended == 20
    assert sum(summary.magnify_statuses.values()) == summary.magnify_metrics
    assert summary.magnify_statuses["delivered"] > 0
    assert summary.merges_by_bridge == summary.merges_at_magnews > 0
    assert "Magnify metrics" in out.getvalue()
    # The demo's own Redis records: every event it sent or polled is there with a final status.
    assert await redis.zcard("mb:events") == 120 + summary.magnify_metrics
