"""What the console's handlers share, in one typed application key of the console's sub-application."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from bridge.web.console.assets import Assets
from bridge.web.console.render import Pages
from bridge.web.console.sessions import Sessions
from config.settings import Settings

__all__ = ["CONSOLE", "Console"]


@dataclass(slots=True)
class Console:
    """``sessions`` is ``None`` when no admin token is set: the console is off. ``http`` (for the
    Magnews subscription page) is opened on startup and closed on cleanup."""

    settings: Settings
    pages: Pages
    assets: Assets
    sessions: Sessions | None
    http: aiohttp.ClientSession | None = None


CONSOLE = web.AppKey("console", Console)
