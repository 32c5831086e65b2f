"""The console's sub-application, mounted at ``/console`` by ``bridge.web.app``.

It shares the web service's Redis client, event reader and settings (``request.config_dict``), and
has its own middleware (``guard``: the console off without an admin token, security headers, errors
as pages) and an HTTP client session for the Magnews page, opened and closed with the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bridge.web.console.assets import Assets
from bridge.web.console.auth import login, login_form, logout
from bridge.web.console.dead_letters import dead_letters
from bridge.web.console.events import event_page, events_page
from bridge.web.console.guard import console_middleware
from bridge.web.console.magnews import magnews_page
from bridge.web.console.magnify import magnify_page
from bridge.web.console.overview import overview
from bridge.web.console.render import Pages
from bridge.web.console.replay import replay, replay_preview
from bridge.web.console.sessions import Sessions
from bridge.web.console.state import CONSOLE, Console
from config.settings import Settings

__all__ = ["create_console"]


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    console = app[CONSOLE]
    console.http = aiohttp.ClientSession()
    yield
    await console.http.close()


def create_console(settings: Settings) -> web.Application:
    """The console for ``settings``; every page answers 503 when ``MAGBRIDGE_ADMIN_TOKEN`` is unset."""
    assets = Assets()
    token = settings.admin_token.get_secret_value() if settings.admin_token is not None else ""
    app = web.Application(middlewares=[console_middleware])
    app[CONSOLE] = Console(settings, Pages(assets), assets, Sessions(settings, token) if token else None)
    app.cleanup_ctx.append(_http_ctx)
    app.router.add_get("/static/{name}", assets.serve, name="asset")
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", overview)
    app.router.add_get("/events", events_page)
    app.router.add_get("/events/{event_id:.+}", event_page)
    app.router.add_get("/dead-letters", dead_letters)
    app.router.add_post("/replay/preview", replay_preview)
    app.router.add_post("/replay", replay)
    app.router.add_get("/magnify", magnify_page)
    app.router.add_get("/magnews", magnews_page)
    return app
