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
from collections.abc import Coroutine
from typing import Any, ClassVar

import aiohttp
import orjson
import structlog
from arq import Worker, cron
from arq.connections import RedisSettings
from arq.worker import func, get_kwargs
from redis.exceptions import RedisError

from bridge.queue import DELIVER_JOB_PREFIX, QUEUE_NAME, deserialize_job, serialize_job
from bridge.stats import Stats
from bridge.store import EventStore
from config.rules import load_rules
from config.settings import Settings, load_settings
from workers.claim import ClaimedJob, JobClaimer
from workers.delivery import Batch
from workers.jobs import EventRun, WorkerDeps, deliver_batch, deliver_event, queue_outcomes
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
    # A keep-alive pool per destination as large as its concurrency cap (a request never waits
    # for a connection its gate admitted), plus the Magnify poll's; request bodies through orjson.
    per_host = max(settings.magicbell_max_concurrency, settings.magnews_max_concurrency)
    connector = aiohttp.TCPConnector(limit=2 * per_host + settings.magnify_concurrency, limit_per_host=per_host)
    session = aiohttp.ClientSession(
        connector=connector,
        json_serialize=lambda value: orjson.dumps(value).decode(),
        cookie_jar=aiohttp.DummyCookieJar(),  # the APIs set no cookies; skip the jar's work per request
    )
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
    # While jobs are due the worker asks again after ``poll_delay``; after a poll that found none, it
    # waits ten times as long (``ResilientWorker``), so an idle worker costs next to nothing.
    poll_delay = 0.005


class ResilientWorker(Worker):
    """arq's worker, kept alive through a Redis outage instead of exiting on the first error,
    claiming jobs in batches and running the delivery jobs of a claim as one batch
    (``workers.jobs.deliver_batch``)."""

    _claimer: JobClaimer | None = None
    _claimed = 0  # jobs the latest poll claimed
    batch_size = 100  # the most delivery jobs one claim takes (``create_worker`` sets it)

    async def _poll_iteration(self) -> None:
        self._claimed = 0
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            _log.warning("redis unavailable, worker waiting", error=str(exc))
            await asyncio.sleep(1)
            return
        if not self._claimed and self.job_counter < self.max_jobs:
            await asyncio.sleep(self.poll_delay_s * 9)  # nothing was due: poll at a tenth of the pace

    async def close(self) -> None:
        """As arq's, but a job that died while shutting down (its connection gone) cannot stop the
        close and leave the pool and the HTTP session open."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)  # cancels the running jobs, as arq's close does
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        await super().close()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim as many due jobs as there are free slots in one round trip (see ``workers.claim``);
        delivery jobs run together as one batch, any other job (cron) as arq runs it."""
        free = self.max_jobs - self.job_counter
        if free <= 0:
            return
        if self._claimer is None:
            self._claimer = JobClaimer(
                self.pool, self.queue_name, int(self.in_progress_timeout_s * 1000), counted_prefix=DELIVER_JOB_PREFIX
            )
        candidates = [job_id.decode() for job_id in job_ids if job_id.decode() not in self.tasks]
        claimed = await self._claimer.claim(candidates, min(free, self.batch_size))
        self._claimed = len(claimed)
        deliveries = [job for job in claimed if job.job_try]
        for job in claimed:
            if not job.job_try:
                await self._start(self.run_job(job.job_id, job.score), [job.job_id])
        if deliveries:
            await self._start(self._run_deliveries(deliveries), [job.job_id for job in deliveries])

    async def _start(self, work: Coroutine[Any, Any, None], job_ids: list[str]) -> None:
        """Run ``work`` as the task of ``job_ids``, holding one of ``max_jobs`` slots for each."""
        for _ in job_ids:
            await self.sem.acquire()  # never waits: no more jobs are claimed than there are free slots
        self.job_counter += len(job_ids)
        task = self.loop.create_task(work)

        def release(_: asyncio.Task[None]) -> None:
            for _job_id in job_ids:
                self._release_sem_dec_counter_on_complete()

        task.add_done_callback(release)
        for job_id in job_ids:
            self.tasks[job_id] = task

    async def _run_deliveries(self, jobs: list[ClaimedJob]) -> None:
        deps: WorkerDeps = self.ctx["deps"]
        runs = [EventRun(job.job_id.removeprefix(DELIVER_JOB_PREFIX), job.job_try) for job in jobs]
        batch = Batch()
        try:
            await deliver_batch(deps, runs, batch)
        finally:
            await asyncio.shield(self._settle(deps, runs, batch))

    async def _settle(self, deps: WorkerDeps, runs: list[EventRun], batch: Batch) -> None:
        """One transaction: the runs' outcomes and the queue's bookkeeping of their jobs."""
        try:
            async with self.pool.pipeline(transaction=True) as pipe:
                await queue_outcomes(deps, pipe, runs, batch, queue=self.queue_name)
                await pipe.execute()
        except RedisError as exc:
            # The claims lapse and the jobs run again; the destinations' idempotency covers repeats.
            _log.error("could not record a delivery batch", events=len(runs), error=str(exc))
            return
        done = sum(1 for run in runs if run.job_done)
        self.jobs_complete += done
        self.jobs_retried += len(runs) - done


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """An arq ``Worker`` for ``settings``; ``overrides`` are Worker arguments (tests: ``burst=True``)."""
    arguments: dict[str, Any] = {
        **get_kwargs(dict(vars(WorkerSettings))),
        "redis_settings": redis_settings(settings),
        "ctx": {"settings": settings},
        "max_jobs": settings.worker_max_jobs,
        # Each poll reads this many due job ids (claimed ones are not due, see ``workers.claim``).
        "queue_read_limit": settings.worker_batch_size,
        "cron_jobs": [*WorkerSettings.cron_jobs, *magnify_cron_jobs(settings)],
        "job_timeout": settings.job_timeout_seconds,
        "job_completion_wait": int(settings.job_timeout_seconds),
        # Our job decides when to give up (dead letter); deferrals must never exhaust arq's own cap.
        "max_tries": 1_000_000,
        **overrides,
    }
    worker = ResilientWorker(**arguments)
    worker.batch_size = settings.worker_batch_size
    return worker
