"""arq worker: ``WorkerSettings`` and ``create_worker(settings)``, with the resources of a process.

Timing that keeps a job on one worker at a time: arq holds a job's in-progress lock for
``job_timeout + 10`` seconds and cancels the job at ``job_timeout``, so a job can never still be
running when the lock lapses. A worker killed with SIGKILL leaves the lock to lapse; the job then
runs again elsewhere within ``job_timeout + 10`` seconds, and the ledger prevents repeats. SIGTERM
stops taking jobs and gives running ones ``job_timeout`` seconds to finish; arq re-queues the rest.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any, ClassVar

import aiohttp
import structlog
from arq import Worker, cron
from arq.connections import RedisSettings
from arq.worker import func, get_kwargs
from redis.exceptions import RedisError

from bridge.queue import QUEUE_NAME, deserialize_job, serialize_job
from bridge.stats import Stats
from bridge.store import EventStore
from config.rules import load_rules
from config.settings import Settings, load_settings
from workers.claim import JobClaimer
from workers.jobs import WorkerDeps, deliver_event
from workers.ledger import Ledger
from workers.poller import POLLER_CTX_KEY, MagnifyPoller, magnify_cron_jobs
from workers.senders import Senders, build_senders
from workers.sweeper import sweep_pending
from workers.upkeep import Upkeep, start_upkeep

__all__ = ["ResilientWorker", "WorkerSettings", "create_worker", "redis_settings"]


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url)


_log = structlog.get_logger("magbridge.worker")


async def startup(ctx: dict[str, Any]) -> None:
    """Open the process's resources; ``ctx["settings"]`` is set by ``create_worker``."""
    settings: Settings = ctx.get("settings") or load_settings()
    rules = load_rules(settings.rules_file)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, limit_per_host=50))
    senders = build_senders(ctx["redis"], session, settings)
    ctx["session"] = session
    ctx["senders"] = senders
    ctx["deps"] = WorkerDeps(
        settings=settings,
        store=EventStore(ctx["redis"], retention_seconds=settings.retention_seconds),
        ledger=Ledger(ctx["redis"], ttl_seconds=settings.retention_seconds),
        stats=Stats(ctx["redis"]),
        rules=rules,
        senders=senders.by_destination,
        template_context={
            "ops_recipients": ",".join(settings.magicbell_recipients),
            "magnews_database_id": settings.magnews_database_id,
        },
    )
    if settings.magnify_enabled:
        # Opens no connection yet: a first token is asked for on the first poll, so wrong
        # credentials show up in logs and readiness instead of stopping the worker.
        ctx[POLLER_CTX_KEY] = MagnifyPoller.from_settings(ctx["redis"], session, settings)
    # Rules reload (SIGHUP, file change), Magnews token renewal, and the worker's probes if asked for.
    ctx["upkeep"] = await start_upkeep(
        settings, ctx["deps"], ctx["redis"], senders.magnews_tokens, embedded=bool(ctx.get("embedded"))
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    upkeep: Upkeep | None = ctx.get("upkeep")
    if upkeep is not None:
        await upkeep.stop()
    senders: Senders | None = ctx.get("senders")
    if senders is not None:
        await senders.close()
    session: aiohttp.ClientSession | None = ctx.get("session")
    if session is not None:
        await session.close()


class WorkerSettings:
    """For ``arq workers.worker.WorkerSettings``; ``magbridge worker`` uses ``create_worker``."""

    functions: ClassVar = [func(deliver_event, name="deliver_event")]
    cron_jobs: ClassVar = [cron(sweep_pending, name="sweep_pending", second={0})]
    on_startup = startup
    on_shutdown = shutdown
    queue_name = QUEUE_NAME
    job_serializer = serialize_job
    job_deserializer = deserialize_job
    keep_result = 0  # outcomes live in the event store, not in arq results
    health_check_interval = 5
    poll_delay = 0.05


class ResilientWorker(Worker):
    """arq's worker, kept alive through a Redis outage instead of exiting on the first error, and
    starting jobs in batches."""

    _claimer: JobClaimer | None = None

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            _log.warning("redis unavailable, worker waiting", error=str(exc))
            await asyncio.sleep(1)

    async def close(self) -> None:
        """As arq's, but a job that died while shutting down (its connection gone) cannot stop the
        close and leave the pool and the HTTP session open."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)  # cancels the running jobs, as arq's close does
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        await super().close()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim as many due jobs as there are free slots in one round trip (see ``workers.claim``)."""
        free = self.max_jobs - self.job_counter
        if free <= 0:
            return
        if self._claimer is None:
            self._claimer = JobClaimer(self.pool, self.queue_name, int(self.in_progress_timeout_s * 1000))
        candidates = [job_id.decode() for job_id in job_ids if job_id.decode() not in self.tasks]
        for job_id, score in await self._claimer.claim(candidates, free):
            await self.sem.acquire()
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """An arq ``Worker`` for ``settings``; ``overrides`` are Worker arguments (tests: ``burst=True``)."""
    arguments: dict[str, Any] = {
        **get_kwargs(dict(vars(WorkerSettings))),
        "redis_settings": redis_settings(settings),
        "ctx": {"settings": settings},
        "max_jobs": settings.worker_max_jobs,
        "cron_jobs": [*WorkerSettings.cron_jobs, *magnify_cron_jobs(settings)],
        "job_timeout": settings.job_timeout_seconds,
        "job_completion_wait": int(settings.job_timeout_seconds),
        # Our job decides when to give up (dead letter); deferrals must never exhaust arq's own cap.
        "max_tries": 1_000_000,
        **overrides,
    }
    return ResilientWorker(**arguments)
