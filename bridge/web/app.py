"""The aiohttp application: webhook receiver, probes, metrics, admin API and its OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bridge.process_metrics import ProcessMetrics
from bridge.store.connections import open_redis
from bridge.store.ingest import EventWriter
from bridge.store.reads import EventReader
from bridge.store.replicas import ReplicaWait
from bridge.web.admin import admin_routes
from bridge.web.console import create_console
from bridge.web.health import healthz, readyz
from bridge.web.ingest_batcher import IngestBatcher
from bridge.web.json_bounds import JsonBounds
from bridge.web.metrics import WEB_METRICS, WebMetrics, metrics_endpoint, metrics_middleware
from bridge.web.openapi import openapi_json
from bridge.web.problems import problem_middleware
from bridge.web.request_id import request_id_middleware
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
    writer = EventWriter(
        redis,
        retention_seconds=settings.retention_seconds,
        record_retention_seconds=settings.record_retention_seconds,
        batch_size=settings.worker_batch_size,
        series=app[WEB_METRICS].process.ingest,
    )
    replicas = settings.redis_min_replicas_ack
    wait = ReplicaWait(redis, replicas=replicas, timeout_ms=settings.redis_replica_ack_timeout_ms) if replicas else None
    app[INGEST] = IngestBatcher(writer, replicas=wait)
    yield
    await redis.aclose()


def create_app(settings: Settings, *, metrics: ProcessMetrics | None = None) -> web.Application:
    """Build the web service for ``settings``; resources open on startup and close on cleanup.

    ``metrics``: the process's series (``magbridge run`` shares them with its worker); a registry of
    the app's own when not given."""
    # aiohttp refuses larger bodies itself; the handler turns that into a problem document.
    # The request id is bound first, so every log line of the request has it; the metrics
    # middleware sits outside the problem middleware so that it counts the problem documents too.
    # keepalive_timeout is aiohttp's only deadline for request headers: a connection that has not
    # sent complete headers this long after connecting (or after its last response) is closed.
    app = web.Application(
        client_max_size=settings.webhook_max_body_bytes,
        middlewares=[request_id_middleware, metrics_middleware, problem_middleware],
        handler_args={"keepalive_timeout": settings.http_header_timeout_seconds},
    )
    app[SETTINGS] = settings
    app[WEBHOOK_GUARD] = WebhookGuard.from_settings(settings)
    app[JSON_BOUNDS] = JsonBounds.from_settings(settings)
    app[WEBHOOK_LOG] = bind_webhook_log()
    app[WEB_METRICS] = WebMetrics(metrics or ProcessMetrics())
    app.cleanup_ctx.append(_redis_ctx)
    app.router.add_post("/webhooks/magnews", receive_magnews)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", openapi_json)
    app.add_routes(admin_routes)
    app.add_subapp("/console", create_console(settings))  # the operator console (docs/console.md)
    return app
