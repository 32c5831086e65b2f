"""What the simulators accept by default, and the settings that point a bridge at running ones.

One place for the well-known test credentials (``magbridge simulate`` prints them, the demo uses
them); the simulators' factories take them as their defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.simulators.magnews_oauth import SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN

if TYPE_CHECKING:  # the runner imports the simulators, which import this
    from bridge.simulators.runner import SimulatorEndpoints

__all__ = [
    "MAGICBELL_TOKEN",
    "MAGNEWS_TOKEN",
    "MAGNIFY_CLIENT_ID",
    "MAGNIFY_CLIENT_SECRET",
    "bridge_settings",
]

MAGICBELL_TOKEN = "sim-magicbell-token"
MAGNEWS_TOKEN = "sim-magnews-token"  # always accepted, like a static access token that never expires
MAGNIFY_CLIENT_ID = "sim-client"
MAGNIFY_CLIENT_SECRET = "sim-secret"


def bridge_settings(endpoints: SimulatorEndpoints) -> tuple[dict[str, str], dict[str, str]]:
    """``MAGBRIDGE_*`` settings for simulators at ``endpoints``: the ones to use, and the Magnews
    refresh-token flow's, which the simulator accepts instead of the static token."""
    settings = {
        "MAGBRIDGE_MAGNIFY_BASE_URL": endpoints.magnify_base_url,
        "MAGBRIDGE_MAGNIFY_TOKEN_URL": endpoints.magnify_token_url,
        "MAGBRIDGE_MAGNIFY_CLIENT_ID": MAGNIFY_CLIENT_ID,
        "MAGBRIDGE_MAGNIFY_CLIENT_SECRET": MAGNIFY_CLIENT_SECRET,
        "MAGBRIDGE_MAGICBELL_BASE_URL": endpoints.magicbell_base_url,
        "MAGBRIDGE_MAGICBELL_TOKEN": MAGICBELL_TOKEN,
        "MAGBRIDGE_MAGNEWS_BASE_URL": endpoints.magnews_base_url,
        "MAGBRIDGE_MAGNEWS_TOKEN": MAGNEWS_TOKEN,
    }
    refresh_flow = {
        "MAGBRIDGE_MAGNEWS_CLIENT_ID": SIM_CLIENT_ID,
        "MAGBRIDGE_MAGNEWS_CLIENT_SECRET": SIM_CLIENT_SECRET,
        "MAGBRIDGE_MAGNEWS_REFRESH_TOKEN": SIM_REFRESH_TOKEN,
        "MAGBRIDGE_MAGNEWS_TOKEN_URL": endpoints.magnews_token_url,
    }
    return settings, refresh_flow
