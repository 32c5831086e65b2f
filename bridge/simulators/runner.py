"""Run the three simulators on real sockets, for tests, the demo and ``magbridge simulate``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.simulators.common import SIM_CORE
from bridge.simulators.magicbell import create_magicbell_app
from bridge.simulators.magnews import create_magnews_app
from bridge.simulators.magnify import create_magnify_app
from bridge.simulators.readings import UnknownReading

__all__ = ["SimulatorEndpoints", "Simulators", "run_simulators"]


@dataclass(frozen=True)
class SimulatorEndpoints:
    """Base URLs in the form each client expects them.

    - ``magicbell_base_url``: ``http://host:port``; routes are at the root, where the real base URL is
      ``https://api.magicbell.com/v2``.
    - ``magnews_base_url``: ``http://host:port``; the client appends ``/v19/...``.
    - ``magnify_base_url``: ``http://host:port/v1/partner``.
    - ``magnify_token_url``: ``http://host:port/oauth2/token``.
    - ``magnews_token_url``: ``http://host:port/oauth2/token`` (the Magnews refresh-token grant).
    """

    magicbell_base_url: str
    magnews_base_url: str
    magnify_base_url: str
    magnify_token_url: str
    magnews_token_url: str = ""


@dataclass(frozen=True)
class Simulators:
    """Running simulators: where to reach them, and their apps (for ``SIM_CORE`` records and faults)."""

    endpoints: SimulatorEndpoints
    magicbell_app: web.Application
    magnews_app: web.Application
    magnify_app: web.Application


def _url(host: str, port: int) -> str:
    # An IPv6 literal needs brackets in a URL.
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _start(app: web.Application, host: str, port: int, runners: list[web.AppRunner]) -> int:
    """Serve ``app`` on ``host:port`` (0 = any free port); the port actually bound."""
    runner = web.AppRunner(app)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, host, port).start()
    bound: int = runner.addresses[0][1]
    return bound


@asynccontextmanager
async def run_simulators(
    host: str = "127.0.0.1",
    ports: tuple[int, int, int] = (0, 0, 0),
    *,
    magicbell: Mapping[str, Any] | None = None,
    magnews: Mapping[str, Any] | None = None,
    magnify: Mapping[str, Any] | None = None,
    readings: Mapping[str, Mapping[str, str]] | None = None,
) -> AsyncIterator[Simulators]:
    """Start the three simulators and stop them on exit.

    ``ports`` are ``(magnify, magicbell, magnews)``, the order ``magbridge simulate`` passes them; 0 picks
    a free port, and the endpoints show the port actually bound.

    ``magicbell``, ``magnews`` and ``magnify`` are keyword arguments for :func:`create_magicbell_app`,
    :func:`create_magnews_app` and :func:`create_magnify_app`, e.g. ``magnify={"motions": 300}``.
    ``readings``: vendor name -> the answers chosen to its spec's open questions
    (:mod:`bridge.simulators.readings`), e.g. ``{"magnews": {"merge_result": "examples"}}``.
    """
    magicbell_app = create_magicbell_app(**(magicbell or {}))
    magnews_app = create_magnews_app(**(magnews or {}))
    magnify_app = create_magnify_app(**(magnify or {}))
    apps = {"magicbell": magicbell_app, "magnews": magnews_app, "magnify": magnify_app}
    for vendor, answers in (readings or {}).items():
        if vendor not in apps:
            raise UnknownReading(f"no simulator {vendor!r} (known: {', '.join(apps)})")
        apps[vendor][SIM_CORE].readings.update(answers)
    runners: list[web.AppRunner] = []
    try:
        magnify_port = await _start(magnify_app, host, ports[0], runners)
        magicbell_port = await _start(magicbell_app, host, ports[1], runners)
        magnews_port = await _start(magnews_app, host, ports[2], runners)
        endpoints = SimulatorEndpoints(
            magicbell_base_url=_url(host, magicbell_port),
            magnews_base_url=_url(host, magnews_port),
            magnify_base_url=_url(host, magnify_port) + "/v1/partner",
            magnify_token_url=_url(host, magnify_port) + "/oauth2/token",
            magnews_token_url=_url(host, magnews_port) + "/oauth2/token",
        )
        yield Simulators(endpoints, magicbell_app, magnews_app, magnify_app)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
