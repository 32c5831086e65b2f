"""``magbridge``: the command line of the contract (web, worker, run, demo, simulate, check, ...)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

import uvloop

from bridge.cli.check import add_check_parser, cmd_check
from bridge.cli.events import add_events_parsers, cmd_dead_letters, cmd_events
from bridge.cli.magnews_webhook import add_webhook_parser, cmd_magnews_webhook
from bridge.cli.replay import add_replay_parser, cmd_replay
from bridge.cli.serve import cmd_run, cmd_web, cmd_worker
from bridge.cli.settings_help import settings_epilog
from bridge.cli.simulate import add_readings as _add_readings
from bridge.cli.simulate import add_simulate_parser, cmd_simulate
from bridge.cli.simulate import readings as _readings
from bridge.logs import configure_logging
from bridge.simulators.readings import UnknownReading
from bridge.version import version
from config.errors import ConfigError
from config.settings import load_settings

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from bridge.cli.demo import DemoSummary, run_demo
    from bridge.cli.demo_redis import demo_redis

    settings = load_settings()
    configure_logging("warning", "console")
    try:
        readings = _readings(args.reading)
    except UnknownReading as exc:
        raise ConfigError(f"--reading: {exc}") from None
    # A Redis URL named on purpose (flag, environment or .env); otherwise a private redis-server.
    given, source = (args.redis_url, "--redis-url") if args.redis_url else (None, "")
    if given is None and "redis_url" in settings.model_fields_set:
        given, source = settings.redis_url, "MAGBRIDGE_REDIS_URL"

    async def demo() -> DemoSummary:
        # SIGTERM ends the demo as Ctrl-C does: cleaning up, its private redis-server stopped.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        async with demo_redis(given, source, sys.stdout) as url:
            demo_settings = settings.model_copy(update={"redis_url": url})
            return await run_demo(demo_settings, events=args.events, out=sys.stdout, readings=readings)

    try:
        summary = asyncio.run(demo())
    except UnknownReading as exc:
        raise ConfigError(f"--reading: {exc}") from None
    except asyncio.CancelledError:
        return 128 + signal.SIGTERM
    return 0 if summary.consistent else 1


_SERVICES = {
    "web": "The aiohttp service: the Magnews webhook receiver, /healthz and /readyz, /metrics, the admin API "
    "and its OpenAPI document, on MAGBRIDGE_HOST:MAGBRIDGE_PORT. Refuses to start without "
    "MAGBRIDGE_WEBHOOK_SECRET unless MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS=true.",
    "worker": "The arq worker, supervised through Redis outages: delivery jobs to MagicBell and Magnews, the "
    "Magnify poll, the sweeper; its own probes with MAGBRIDGE_WORKER_PROBES. Run as many as you like.",
    "run": "web and worker in one process, for a single small host.",
}
_DEMO = (
    "The whole bridge against built-in simulators of the three APIs, with generated traffic and live progress, "
    "ending with a summary checked against the simulators' own records (exit status 1 on a mismatch)."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magbridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"magbridge {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("web", help="the aiohttp service: webhooks, health, metrics, admin API")
    commands.add_parser("worker", help="the arq worker: deliveries and the Magnify poll")
    commands.add_parser("run", help="web and worker in one process")
    demo = commands.add_parser(
        "demo", help="the whole bridge against built-in simulators, on a private redis-server of its own",
        description=_DEMO,
    )  # fmt: skip
    demo.add_argument("--events", type=int, default=200, help="Magnews webhook events to send (default 200)")
    demo.add_argument(
        "--redis-url",
        metavar="URL",
        help="run on this Redis database instead (also MAGBRIDGE_REDIS_URL); it must be empty, and the demo "
        "deletes its keys there when it ends",
    )
    _add_readings(demo)
    add_simulate_parser(commands, help="the three API simulators on local ports, and the settings they accept")
    add_check_parser(commands)
    add_webhook_parser(commands)
    add_replay_parser(commands)
    add_events_parsers(commands)
    for name, command in commands.choices.items():  # every command's --help: what it does, what it reads
        command.description = command.description or _SERVICES.get(name)
        command.epilog = command.epilog or settings_epilog(name)
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "web": cmd_web,
    "worker": cmd_worker,
    "run": cmd_run,
    "demo": _cmd_demo,
    "simulate": lambda args: cmd_simulate(args, sys.stdout),
    "check": cmd_check,
    "magnews-webhook": cmd_magnews_webhook,
    "replay": cmd_replay,
    "events": cmd_events,
    "dead-letters": cmd_dead_letters,
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
