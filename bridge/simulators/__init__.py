"""Faithful simulators of the MagicBell, Magnews and Magnify APIs, as real aiohttp servers.

Used by the tests, the demo and ``magbridge simulate``. Every simulator records the requests it gets,
can inject faults (errors, 429s, latency, dropped connections, outages) and honours ``Idempotency-Key``;
see :mod:`bridge.simulators.common` for the ``/_sim/...`` control routes.
"""

from bridge.simulators.common import SIM_CORE, Faults, RecordedRequest, SimCore
from bridge.simulators.magicbell import create_magicbell_app
from bridge.simulators.magnews import create_magnews_app
from bridge.simulators.magnify import create_magnify_app
from bridge.simulators.runner import SimulatorEndpoints, Simulators, run_simulators

__all__ = [
    "SIM_CORE",
    "Faults",
    "RecordedRequest",
    "SimCore",
    "SimulatorEndpoints",
    "Simulators",
    "create_magicbell_app",
    "create_magnews_app",
    "create_magnify_app",
    "run_simulators",
]
