"""``magbridge worker``: arq's ``Worker``, restarted when Redis goes away, stopped gracefully on a signal.

arq's worker stops at the first Redis error of its poll loop. The supervisor logs it, closes that
worker (its running jobs are cancelled; arq runs them again once their in-progress lock lapses) and
starts a new one after a second, for as long as it takes: an outage never ends the process. On
SIGTERM or SIGINT it stops taking jobs, gives the running ones ``job_timeout_seconds`` to finish
(arq's ``handle_sig_wait_for_completion``) and closes.

With ``WORKER_PROBES`` (and ``probes=True``; ``magbridge run`` serves them from its web service) the
supervisor also answers ``/healthz``, ``/readyz`` and ``/metrics`` (``workers.probes``), through an
outage too: alive, and not ready while Redis does not answer or no arq worker runs. The process's
series (``metrics``) belong to the supervisor, so they survive the workers it replaces. A probe
address that cannot be bound stops the process with ``ConfigError`` naming ``HOST`` and ``PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog
from arq.worker import Worker
from redis.exceptions import RedisError

from bridge.process_metrics import ProcessMetrics
from bridge.store.connections import open_redis
from config.errors import ConfigError
from config.settings import Settings
from workers.probes import start_probes
from workers.worker import create_worker, shutdown

__all__ = ["WorkerSupervisor", "stop_running", "until_stopped"]

_log = structlog.get_logger("magbridge.worker")
_RESTART_SECONDS = 1.0


class WorkerSupervisor:
    def __init__(
        self, settings: Settings, *, probes: bool = True, metrics: ProcessMetrics | None = None, **overrides: Any
    ):
        self._settings = settings
        self._probes = probes and settings.worker_probes
        self.metrics = metrics or ProcessMetrics()
        self._overrides = overrides
        self._stopping = asyncio.Event()
        self.worker: Worker | None = None
        self.stop_signal: signal.Signals | None = None  # what ``stop`` was called for, for the stop line
        self._enforcer: asyncio.Task[None] | None = None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop taking jobs; running ones get the job timeout to finish."""
        self.stop_signal = self.stop_signal or signal.Signals(signum)
        self._stopping.set()
        if self.worker is not None:
            self.worker.handle_sig_wait_for_completion(signal.Signals(signum))
            if self._enforcer is None:
                self._enforcer = asyncio.get_running_loop().create_task(until_stopped(self.worker))

    def handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop, signum)

    async def run(self) -> None:
        """Run workers until ``stop``; a worker that lost Redis is replaced."""
        if not self._probes:
            await self._supervise()
            return
        redis = open_redis(self._settings.redis_url)
        try:
            probes = await start_probes(self._settings, redis, self.metrics, lambda: self.worker is not None)
        except OSError as exc:
            await redis.aclose()
            where = f"{self._settings.host}:{self._settings.port}"
            raise ConfigError(
                f"cannot serve the worker's probes on {where} (MAGBRIDGE_HOST, MAGBRIDGE_PORT): {exc.strerror or exc}"
            ) from exc
        try:
            await self._supervise()
        finally:
            await probes.cleanup()
            await redis.aclose()

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            worker = self.worker = create_worker(
                self._settings, metrics=self.metrics, handle_signals=False, **self._overrides
            )
            try:
                await worker.async_run()
                return  # a burst worker that ran out of jobs
            except asyncio.CancelledError:
                if not self._stopping.is_set():
                    raise
            except (RedisError, OSError) as exc:
                _log.warning("redis unavailable, worker waiting", error=str(exc) or type(exc).__name__)
            finally:
                await _close(worker)
                self.worker = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _RESTART_SECONDS)


async def until_stopped(worker: Worker) -> None:
    """Repeat arq's cancellation of the worker's main task where it was lost, until the task ends.

    A cancellation that lands inside a Redis call (arq's ``log_redis_info`` at start-up, a poll) can
    be swallowed by redis-py; arq would then poll on and the process (or the demo) never stop."""
    task = worker.main_task
    while task is not None and not task.done():
        await asyncio.sleep(0.5)
        if task.cancelling() and not task.done():
            task.cancel()


async def stop_running(worker: Worker, task: asyncio.Task[None]) -> None:
    """Stop a worker run in ``task`` (``worker.async_run()``) as a signal would, repeating the
    cancellation where a Redis call lost it (``until_stopped``); for the demo and the tests, which run
    arq's worker in a task of their own."""
    if worker.main_task is None:  # not started yet
        task.cancel()
    else:
        worker.handle_sig(signal.SIGTERM)
        await until_stopped(worker)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close(worker: Worker) -> None:
    """arq's ``close``; where it stops at Redis (a job that failed with it, the heartbeat it deletes),
    the rest of it: the process's resources and the pool."""
    try:
        await worker.close()
    except (RedisError, OSError, asyncio.CancelledError):
        await shutdown(worker.ctx)
        with contextlib.suppress(RedisError, OSError):
            await worker.pool.aclose()
