"""``magbridge``: the command line of the contract (web, worker, run, demo, simulate, check, ...)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

import uvloop
from aiohttp import web

from bridge.cli.check import add_check_parser, cmd_check
from bridge.cli.gc_tuning import tune_gc
from bridge.cli.magnews_webhook import add_webhook_parser, cmd_magnews_webhook
from bridge.cli.replay import add_replay_parser, cmd_replay
from bridge.logs import configure_logging
from bridge.simulators.readings import UnknownReading, parse_reading
from bridge.web.app import create_app
from config.errors import ConfigError
from config.rules import load_rules
from config.settings import Settings, load_settings

__all__ = ["main"]


def _prepare() -> Settings:
    """Settings and rules are validated before anything starts; a problem stops the process."""
    settings = load_settings()
    load_rules(settings.rules_file)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _cmd_web(_: argparse.Namespace) -> int:
    settings = _prepare()
    app = create_app(settings)
    tune_gc()
    web.run_app(app, host=settings.host, port=settings.port, print=None)
    return 0


def _cmd_worker(_: argparse.Namespace) -> int:
    settings = _prepare()
    asyncio.run(_run_worker(settings))
    return 0


async def _run_worker(settings: Settings) -> None:
    from workers.supervisor import WorkerSupervisor

    supervisor = WorkerSupervisor(settings)
    supervisor.handle_signals()
    tune_gc()
    await supervisor.run()


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _run_both(settings: Settings) -> None:
    from workers.supervisor import WorkerSupervisor

    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    # The web service above already answers the probes on this port.
    supervisor = WorkerSupervisor(settings, probes=False)
    supervisor.handle_signals()
    tune_gc()
    try:
        # As ``magbridge worker`` does on SIGTERM: no new jobs, running ones get the job timeout to finish.
        await supervisor.run()
    finally:
        await runner.cleanup()


def _cmd_run(_: argparse.Namespace) -> int:
    asyncio.run(_run_both(_prepare()))
    return 0


async def _simulate(args: argparse.Namespace) -> None:
    from bridge.simulators import run_simulators

    async with run_simulators(
        host=args.host,
        ports=(args.magnify_port, args.magicbell_port, args.magnews_port),
        readings=_readings(args.reading),
    ) as sims:
        endpoints = sims.endpoints
        print(f"MAGBRIDGE_MAGNIFY_BASE_URL={endpoints.magnify_base_url}")
        print(f"MAGBRIDGE_MAGNIFY_TOKEN_URL={endpoints.magnify_token_url}")
        print(f"MAGBRIDGE_MAGICBELL_BASE_URL={endpoints.magicbell_base_url}")
        print(f"MAGBRIDGE_MAGNEWS_BASE_URL={endpoints.magnews_base_url}", flush=True)
        await _wait_for_signal()


def _cmd_simulate(args: argparse.Namespace) -> int:
    configure_logging("info", "console")
    tune_gc()
    try:
        asyncio.run(_simulate(args))
    except UnknownReading as exc:
        raise ConfigError(f"--reading: {exc}") from None
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from bridge.cli.demo import run_demo

    settings = load_settings()
    configure_logging("warning", "console")
    try:
        summary = asyncio.run(run_demo(settings, events=args.events, out=sys.stdout, readings=_readings(args.reading)))
    except UnknownReading as exc:
        raise ConfigError(f"--reading: {exc}") from None
    return 0 if summary.consistent else 1


def _readings(values: list[str] | None) -> dict[str, dict[str, str]]:
    readings: dict[str, dict[str, str]] = {}
    for text in values or []:
        vendor, question, answer = parse_reading(text)
        readings.setdefault(vendor, {})[question] = answer
    return readings


def _add_readings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reading",
        action="append",
        metavar="VENDOR.QUESTION=ANSWER",
        help="answer one of a vendor spec's open questions the simulators serve (repeatable); "
        "docs/vendor-readings.md lists them",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magbridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("web", help="the aiohttp service: webhooks, health, metrics, admin API")
    commands.add_parser("worker", help="the arq worker: deliveries and the Magnify poll")
    commands.add_parser("run", help="web and worker in one process")
    demo = commands.add_parser("demo", help="the whole bridge against built-in simulators; needs only Redis")
    demo.add_argument("--events", type=int, default=200, help="Magnews webhook events to send (default 200)")
    _add_readings(demo)
    simulate = commands.add_parser("simulate", help="the three API simulators on local ports")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--magnify-port", type=int, default=8091)
    simulate.add_argument("--magicbell-port", type=int, default=8092)
    simulate.add_argument("--magnews-port", type=int, default=8093)
    _add_readings(simulate)
    add_check_parser(commands)
    add_webhook_parser(commands)
    add_replay_parser(commands)
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "web": _cmd_web,
    "worker": _cmd_worker,
    "run": _cmd_run,
    "demo": _cmd_demo,
    "simulate": _cmd_simulate,
    "check": cmd_check,
    "magnews-webhook": cmd_magnews_webhook,
    "replay": cmd_replay,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # uvloop's event loop is a drop-in for asyncio's and measurably faster for the receiver and the
    # worker alike (see docs/performance.md).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"magbridge: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
