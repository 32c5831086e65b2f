"""arq worker: ``WorkerSettings`` (for ``arq workers.worker.WorkerSettings``), ``create_worker(settings)``
and the resources of a worker process, opened in ``startup`` and closed in ``shutdown``.

Timing that keeps a job on one worker at a time: a delivery batch stops sending after
``job_timeout_seconds`` and records its outcomes; arq cancels the job ``SETTLE_SECONDS`` later at
the latest and holds its in-progress lock ten seconds longer than that, so a job never still runs
when the lock lapses. A worker killed with SIGKILL leaves the lock to lapse; arq then runs the job
again elsewhere, and the ledger prevents repeats. SIGTERM stops taking jobs and gives running ones
``job_timeout_seconds`` to finish; arq runs the rest again (``workers.supervisor``).

The process's series (``ctx["metrics"]``, a ``ProcessMetrics``) are given by whoever creates the
worker, so they outlive an arq ``Worker`` that the supervisor replaces after a Redis outage.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker, func

from bridge.process_metrics import ProcessMetrics
from bridge.store import keys
from bridge.store.connections import open_redis
from bridge.store.queue import DELIVER_FUNCTION, deserialize_job, serialize_job
from config.errors import ConfigError
from config.rules import load_rules
from config.sentinel_url import is_sentinel_url, parse_sentinel_url
from config.settings import Settings, load_settings
from workers.batch import WorkerDeps
from workers.destinations.senders import Senders, build_senders
from workers.jobs import deliver_events
from workers.ledger import Ledger
from workers.magnify.poller import POLLER_CTX_KEY, MagnifyPoller, magnify_cron_jobs
from workers.runs import DeliveryRuns
from workers.sweeper import sweep_pending
from workers.upkeep import Upkeep, start_upkeep

__all__ = ["SETTLE_SECONDS", "create_worker", "redis_settings", "shutdown", "startup", "worker_arguments"]

SETTLE_SECONDS = 10
"""How long a delivery job may take past ``job_timeout_seconds`` to record its outcomes."""


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's settings for ``REDIS_URL``, for arq's own command line; a ``redis+sentinel://`` URL
    becomes arq's own Sentinel support (``sentinel=True``), which passes no password to the
    Sentinels themselves: ``magbridge worker`` opens its pool with ``open_redis`` instead."""
    url = settings.redis_url
    if not is_sentinel_url(url):
        return RedisSettings.from_dsn(url)
    target = parse_sentinel_url(url, "MAGBRIDGE_REDIS_URL")
    if target.sentinel_password is not None:
        raise ConfigError(
            "MAGBRIDGE_REDIS_URL: arq's own command line cannot authenticate to Sentinels (sentinel_password); "
            "run magbridge worker instead"
        )
    return RedisSettings(
        host=list(target.sentinels),
        sentinel=True,
        sentinel_master=target.master,
        database=target.database,
        username=target.username,
        password=target.password,
    )


async def startup(ctx: dict[str, Any]) -> None:
    """Open the process's resources; ``ctx["settings"]`` is set by ``create_worker`` (the plain arq
    entry point reads the environment)."""
    settings: Settings = ctx.get("settings") or load_settings()
    ctx["settings"] = settings
    metrics: ProcessMetrics = ctx.get("metrics") or ProcessMetrics()
    ctx["metrics"] = metrics
    rules = load_rules(settings.rules_file)
    # A keep-alive pool per destination as large as its concurrency cap (a request never waits
    # for a connection its gate admitted), plus the Magnify poll's; request bodies through orjson.
    per_host = max(settings.magicbell_max_concurrency, settings.magnews_max_concurrency)
    connector = aiohttp.TCPConnector(limit=2 * per_host + settings.magnify_concurrency, limit_per_host=per_host)
    session = aiohttp.ClientSession(
        connector=connector,
        json_serialize=lambda value: orjson.dumps(value).decode(),
        cookie_jar=aiohttp.DummyCookieJar(),  # the APIs set no cookies; skip the jar's work per request
    )
    senders = build_senders(ctx["redis"], session, settings, metrics=metrics.worker)
    ctx["session"] = session
    ctx["senders"] = senders
    ctx["deps"] = WorkerDeps(
        settings=settings,
        runs=DeliveryRuns(
            ctx["redis"],
            retention_seconds=settings.retention_seconds,
            record_retention_seconds=settings.record_retention_seconds,
        ),
        ledger=Ledger(ctx["redis"], ttl_seconds=settings.retention_seconds),
        metrics=metrics.worker,
        rules=rules,
        senders=senders.by_destination,
        template_context={
            "ops_recipients": ",".join(settings.magicbell_recipients),
            "magnews_database_id": settings.magnews_database_id,
            "magnews_primary_key": settings.magnews_primary_key,
        },
    )
    if settings.magnify_enabled:
        # Opens no connection yet: a first token is asked for on the first poll, so wrong
        # credentials show up in logs and readiness instead of stopping the worker.
        ctx[POLLER_CTX_KEY] = MagnifyPoller.from_settings(ctx["redis"], session, settings, metrics=metrics)
    # Rules reload (SIGHUP, file change) and Magnews token renewal.
    ctx["upkeep"] = await start_upkeep(settings, ctx["deps"], senders.magnews_tokens)


async def shutdown(ctx: dict[str, Any]) -> None:
    upkeep: Upkeep | None = ctx.pop("upkeep", None)
    if upkeep is not None:
        await upkeep.stop()
    senders: Senders | None = ctx.pop("senders", None)
    if senders is not None:
        await senders.close()
    session: aiohttp.ClientSession | None = ctx.pop("session", None)
    if session is not None:
        await session.close()


def worker_arguments(settings: Settings) -> dict[str, Any]:
    """arq ``Worker`` arguments for ``settings``."""
    return {
        # arq retries a job only when Redis failed it; past this many tries the sweeper takes over.
        "functions": [func(deliver_events, name=DELIVER_FUNCTION, max_tries=25)],
        "cron_jobs": [cron(sweep_pending, name="sweep_pending", second={0}), *magnify_cron_jobs(settings)],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "queue_name": keys.QUEUE_NAME,
        "health_check_key": keys.WORKER_HEARTBEAT,
        "health_check_interval": 5,
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        "keep_result": 0,  # outcomes live in the event store, not in arq results
        # Jobs carry up to WORKER_BATCH_SIZE events each; this many run at once.
        "max_jobs": settings.worker_max_jobs,
        "poll_delay": settings.worker_poll_seconds,
        "job_timeout": settings.job_timeout_seconds + SETTLE_SECONDS,
        "job_completion_wait": int(settings.job_timeout_seconds),
    }


def __getattr__(name: str) -> Any:
    """``WorkerSettings``, for arq's own command line (``arq workers.worker.WorkerSettings``): the
    arguments ``magbridge worker`` uses, from the environment, read when arq asks for them."""
    if name == "WorkerSettings":
        settings = load_settings()
        return {**worker_arguments(settings), "redis_settings": redis_settings(settings)}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_worker(settings: Settings, *, metrics: ProcessMetrics | None = None, **overrides: Any) -> Worker:
    """An arq ``Worker`` for ``settings`` counting into ``metrics`` (a registry of its own when not
    given; ``worker.ctx["metrics"]``); ``overrides`` are Worker arguments (tests: ``burst=True``).

    Its pool is the one every process opens (``open_redis``: the same timeouts, and Sentinel with a
    Sentinel password); arq closes it with the worker."""
    arguments = worker_arguments(settings)
    arguments["ctx"] = {**arguments["ctx"], "metrics": metrics or ProcessMetrics()}
    arguments["redis_pool"] = open_redis(settings.redis_url)
    return Worker(**{**arguments, **overrides})
