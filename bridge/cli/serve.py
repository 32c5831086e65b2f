"""``magbridge web``, ``worker`` and ``run``: the long-running services, each with its start and stop line.

Settings and rules are validated before anything starts; a problem stops the process with one line
(exit status 2), as does a listen address that cannot be bound. SIGTERM or SIGINT stops each one
gracefully (``workers.supervisor`` for the worker's jobs) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from bridge.cli.gc_tuning import tune_gc
from bridge.cli.lifecycle import Lifecycle, bridge_facts, catch_signals, lifecycle, listen_address
from bridge.logs import configure_logging
from bridge.process_metrics import ProcessMetrics
from bridge.web.app import create_app
from config.errors import ConfigError
from config.rules import load_rules
from config.settings import Settings, load_settings

__all__ = ["cmd_run", "cmd_web", "cmd_worker", "prepare"]


def prepare() -> Settings:
    """Settings and rules are validated before anything starts; a problem stops the process."""
    settings = load_settings()
    load_rules(settings.rules_file)
    configure_logging(settings.log_level, settings.log_format)
    return settings


async def _listen(runner: web.AppRunner, settings: Settings) -> str:
    """Serve ``runner`` on ``HOST:PORT``; the address actually bound (``PORT`` 0 picks one)."""
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as exc:
        where = listen_address(settings.host, settings.port)
        raise ConfigError(f"cannot listen on {where} (MAGBRIDGE_HOST, MAGBRIDGE_PORT): {exc.strerror or exc}") from exc
    return listen_address(settings.host, runner.addresses[0][1])


async def _serve_web(settings: Settings, life: Lifecycle) -> None:
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    try:
        tune_gc()
        listen = await _listen(runner, settings)
        signals = catch_signals()
        life.started(listen=listen, **bridge_facts(settings, receiver=True, worker=False))
        life.stopped_by(await signals)
    finally:
        await runner.cleanup()  # stops taking connections, lets requests in progress finish


async def _run_worker(settings: Settings, life: Lifecycle) -> None:
    from workers.supervisor import WorkerSupervisor

    supervisor = WorkerSupervisor(settings)
    supervisor.handle_signals()
    tune_gc()
    probes = listen_address(settings.host, settings.port) if settings.worker_probes else None
    life.started(listen=probes, **bridge_facts(settings, receiver=False, worker=True))
    try:
        await supervisor.run()
    finally:
        if supervisor.stop_signal is not None:
            life.stopped_by(supervisor.stop_signal)


async def _run_both(settings: Settings, life: Lifecycle) -> None:
    from workers.supervisor import WorkerSupervisor

    # One process, one registry: the web service's /metrics shows the worker's series too.
    metrics = ProcessMetrics()
    runner = web.AppRunner(create_app(settings, metrics=metrics))
    await runner.setup()
    try:
        listen = await _listen(runner, settings)
        # The web service above already answers the probes on this port.
        supervisor = WorkerSupervisor(settings, probes=False, metrics=metrics)
        supervisor.handle_signals()
        tune_gc()
        life.started(listen=listen, **bridge_facts(settings, receiver=True, worker=True))
        try:
            # As ``magbridge worker`` does on SIGTERM: no new jobs, running ones get the job timeout to finish.
            await supervisor.run()
        finally:
            if supervisor.stop_signal is not None:
                life.stopped_by(supervisor.stop_signal)
    finally:
        await runner.cleanup()


def cmd_web(_: argparse.Namespace) -> int:
    settings = prepare()
    with lifecycle("web") as life:
        asyncio.run(_serve_web(settings, life))
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    settings = prepare()
    with lifecycle("worker") as life:
        asyncio.run(_run_worker(settings, life))
    return 0


def cmd_run(_: argparse.Namespace) -> int:
    settings = prepare()
    with lifecycle("run") as life:
        asyncio.run(_run_both(settings, life))
    return 0
