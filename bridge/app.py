"""The aiohttp application: webhook receiver, probes (metrics and admin join later)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bridge.connections import open_redis
from bridge.health import healthz, readyz
from bridge.problems import problem_middleware
from bridge.state import REDIS, SETTINGS, STORE
from bridge.store import EventStore
from bridge.webhooks import receive_magnews
from config.settings import Settings

__all__ = ["create_app"]


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis = open_redis(settings.redis_url)
    app[REDIS] = redis
    app[STORE] = EventStore(redis, retention_seconds=settings.retention_seconds)
    yield
    await redis.aclose()


def create_app(settings: Settings) -> web.Application:
    """Build the web service for ``settings``; resources open on startup and close on cleanup."""
    # aiohttp refuses larger bodies itself; the handler turns that into a problem document.
    app = web.Application(client_max_size=settings.webhook_max_body_bytes, middlewares=[problem_middleware])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_redis_ctx)
    app.router.add_post("/webhooks/magnews", receive_magnews)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
