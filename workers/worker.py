"""arq worker: ``WorkerSettings`` and ``create_worker(settings)``, with the resources of a process."""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
from arq import Worker
from arq.connections import RedisSettings
from arq.worker import func, get_kwargs

from bridge.queue import QUEUE_NAME, deserialize_job, serialize_job
from bridge.store import EventStore
from config.rules import load_rules
from config.settings import Settings, load_settings
from workers.http import ApiResponse
from workers.jobs import WorkerDeps, deliver_event
from workers.ledger import Ledger
from workers.magicbell import MagicBellClient
from workers.magnews import MagnewsClient
from workers.mapping import Request

__all__ = ["WorkerSettings", "create_worker", "redis_settings"]


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url)


def _senders(magicbell: MagicBellClient, magnews: MagnewsClient) -> dict[str, Any]:
    async def broadcast(request: Request) -> ApiResponse:
        return await magicbell.create_broadcast(request.body, idempotency_key=request.key)

    async def merge(request: Request) -> ApiResponse:
        return await magnews.merge_contact(request.body["values"], request.body["options"], idempotency_key=request.key)

    return {"magicbell": broadcast, "magnews": merge}


async def startup(ctx: dict[str, Any]) -> None:
    """Open the process's resources; ``ctx["settings"]`` is set by ``create_worker``."""
    settings: Settings = ctx.get("settings") or load_settings()
    rules = load_rules(settings.rules_file)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, limit_per_host=50))
    magicbell = MagicBellClient.from_settings(session, settings)
    magnews = MagnewsClient.from_settings(session, settings)
    ctx["session"] = session
    ctx["deps"] = WorkerDeps(
        settings=settings,
        store=EventStore(ctx["redis"], retention_seconds=settings.retention_seconds),
        ledger=Ledger(ctx["redis"], ttl_seconds=settings.retention_seconds),
        rules=rules,
        senders=_senders(magicbell, magnews),
        template_context={
            "ops_recipients": ",".join(settings.magicbell_recipients),
            "magnews_database_id": settings.magnews_database_id,
        },
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    session: aiohttp.ClientSession | None = ctx.get("session")
    if session is not None:
        await session.close()


class WorkerSettings:
    """For ``arq workers.worker.WorkerSettings``; ``magbridge worker`` uses ``create_worker``."""

    functions: ClassVar = [func(deliver_event, name="deliver_event")]
    on_startup = startup
    on_shutdown = shutdown
    queue_name = QUEUE_NAME
    job_serializer = serialize_job
    job_deserializer = deserialize_job
    keep_result = 0  # outcomes live in the event store, not in arq results
    job_timeout = 120
    health_check_interval = 5
    poll_delay = 0.05


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """An arq ``Worker`` for ``settings``; ``overrides`` are Worker arguments (tests: ``burst=True``)."""
    arguments: dict[str, Any] = {
        **get_kwargs(dict(vars(WorkerSettings))),
        "redis_settings": redis_settings(settings),
        "ctx": {"settings": settings},
        "max_jobs": settings.worker_max_jobs,
        # Our job gives up (dead letter) at retry_max_attempts; arq's own cap must never be reached.
        "max_tries": settings.retry_max_attempts + 5,
        **overrides,
    }
    return Worker(**arguments)
