"""The aiohttp application: webhook receiver, probes, metrics, admin API and its OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bridge.store.connections import open_redis
from bridge.store.ingest import EventWriter
from bridge.store.reads import EventReader
from bridge.web.admin import admin_routes
from bridge.web.health import healthz, readyz
from bridge.web.ingest_batcher import IngestBatcher
from bridge.web.json_bounds import JsonBounds
from bridge.web.metrics import WEB_METRICS, WebMetrics, metrics_endpoint, metrics_middleware
from bridge.web.openapi import openapi_json
from bridge.web.problems import problem_middleware
from bridge.web.state import INGEST, READER, REDIS, SETTINGS
from bridge.web.webhook_guard import WEBHOOK_GUARD, WebhookGuard
from bridge.web.webhooks import JSON_BOUNDS, WEBHOOK_LOG, bind_webhook_log, receive_magnews
from config.settings import Settings

__all__ = ["create_app"]


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis = open_redis(settings.redis_url)
    app[REDIS] = redis
    app[READER] = EventReader(redis)
    writer = EventWriter(redis, retention_seconds=settings.retention_seconds, batch_size=settings.worker_batch_size)
    app[INGEST] = IngestBatcher(writer)
    yield
    await redis.aclose()


def create_app(settings: Settings) -> web.Application:
    """Build the web service for ``settings``; resources open on startup and close on cleanup."""
    # aiohttp refuses larger bodies itself; the handler turns that into a problem document.
    # The metrics middleware is outermost so that it counts the problem documents too.
    # keepalive_timeout is aiohttp's only deadline for request headers: a connection that has not
    # sent complete headers this long after connecting (or after its last response) is closed.
    app = web.Application(
        client_max_size=settings.webhook_max_body_bytes,
        middlewares=[metrics_middleware, problem_middleware],
        handler_args={"keepalive_timeout": settings.http_header_timeout_seconds},
    )
    app[SETTINGS] = settings
    app[WEBHOOK_GUARD] = WebhookGuard.from_settings(settings)
    app[JSON_BOUNDS] = JsonBounds.from_settings(settings)
    app[WEBHOOK_LOG] = bind_webhook_log()
    app[WEB_METRICS] = WebMetrics()
    app.cleanup_ctx.append(_redis_ctx)
    app.router.add_post("/webhooks/magnews", receive_magnews)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", openapi_json)
    app.add_routes(admin_routes)
    return app
