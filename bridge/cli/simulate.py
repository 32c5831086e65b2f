"""``magbridge simulate``: the three API simulators on local ports, for staging and outside tests.

Prints the settings that point a bridge at them, with the tokens and credentials they accept, then
serves until SIGTERM or SIGINT. ``--reading VENDOR.QUESTION=ANSWER`` (also taken by ``magbridge
demo``) chooses an answer to one of a vendor spec's open questions (docs/vendor-readings.md).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, TextIO

from yarl import URL

from bridge.cli.gc_tuning import tune_gc
from bridge.cli.lifecycle import Lifecycle, catch_signals, lifecycle
from bridge.logs import configure_logging
from bridge.simulators.credentials import bridge_settings
from bridge.simulators.readings import UnknownReading, parse_reading
from config.errors import ConfigError

__all__ = ["add_readings", "add_simulate_parser", "cmd_simulate", "print_settings", "readings"]


def readings(values: list[str] | None) -> dict[str, dict[str, str]]:
    """``--reading`` values as vendor -> question -> answer; ``UnknownReading`` for a malformed one."""
    chosen: dict[str, dict[str, str]] = {}
    for text in values or []:
        vendor, question, answer = parse_reading(text)
        chosen.setdefault(vendor, {})[question] = answer
    return chosen


def add_readings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reading",
        action="append",
        metavar="VENDOR.QUESTION=ANSWER",
        help="answer one of a vendor spec's open questions the simulators serve (repeatable); "
        "docs/vendor-readings.md lists them",
    )


def add_simulate_parser(commands: Any, **texts: str) -> None:
    """Add the ``simulate`` subcommand to ``commands`` (argparse sub-parsers); ``texts``: help, epilog."""
    simulate = commands.add_parser("simulate", description=__doc__, **texts)
    simulate.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    simulate.add_argument("--magnify-port", type=int, default=8091, help="default 8091; 0 picks a free port")
    simulate.add_argument("--magicbell-port", type=int, default=8092, help="default 8092; 0 picks a free port")
    simulate.add_argument("--magnews-port", type=int, default=8093, help="default 8093; 0 picks a free port")
    add_readings(simulate)


def print_settings(settings: dict[str, str], refresh_flow: dict[str, str], out: TextIO) -> None:
    """``KEY=value`` lines a bridge can take as its environment; the alternative Magnews flow commented."""
    out.write("# settings for a bridge, with the credentials these simulators accept:\n")
    out.writelines(f"{name}={value}\n" for name, value in settings.items())
    out.write("# or, instead of MAGBRIDGE_MAGNEWS_TOKEN, the Magnews refresh-token flow:\n")
    out.writelines(f"# {name}={value}\n" for name, value in refresh_flow.items())
    out.flush()


async def _simulate(args: argparse.Namespace, life: Lifecycle, out: TextIO) -> None:
    from bridge.simulators import run_simulators

    async with run_simulators(
        host=args.host,
        ports=(args.magnify_port, args.magicbell_port, args.magnews_port),
        readings=readings(args.reading),
    ) as sims:
        signals = catch_signals()
        settings, refresh_flow = bridge_settings(sims.endpoints)
        print_settings(settings, refresh_flow, out)
        endpoints = sims.endpoints
        urls = (endpoints.magnify_base_url, endpoints.magicbell_base_url, endpoints.magnews_base_url)
        life.started(
            listen=", ".join(f"{URL(url).raw_host}:{URL(url).port}" for url in urls),
            magnify=endpoints.magnify_base_url,
            magicbell=endpoints.magicbell_base_url,
            magnews=endpoints.magnews_base_url,
        )
        life.stopped_by(await signals)


def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    configure_logging("info", "console")
    tune_gc()
    try:
        with lifecycle("simulate") as life:
            asyncio.run(_simulate(args, life, out))
    except UnknownReading as exc:
        raise ConfigError(f"--reading: {exc}") from None
    except OSError as exc:  # a port already taken
        raise ConfigError(f"the simulators cannot listen: {exc.strerror or exc}") from exc
    return 0
