"""Logging in and out of the console, and the guard every other page goes through (``signed_in``).

``GET /console/login`` shows the form (with its nonce cookie and CSRF token); ``POST /console/login``
takes the admin token from the form body (never a URL), compares it in constant time and answers
with the session cookie and a redirect to the page asked for. A wrong token is logged, without what
was typed. ``POST /console/logout`` ends the session. A page asked for without a session redirects
to the login form, which comes back to it afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import structlog
from aiohttp import web

from bridge.web.console.csrf import checked_form
from bridge.web.console.sessions import Session, Sessions
from bridge.web.console.state import CONSOLE
from config.errors import RequestRejected

__all__ = ["PageHandler", "login", "login_form", "logout", "redirect", "signed_in"]

_log = structlog.get_logger("magbridge.console")
_HOME = "/console/"

PageHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def redirect(location: str) -> web.Response:
    """303 See Other: after a form, the browser asks for ``location`` with a GET."""
    return web.Response(status=303, headers={"Location": location})


def _sessions(request: web.Request) -> Sessions:
    sessions = request.app[CONSOLE].sessions
    assert sessions is not None  # the middleware answers 503 without an admin token
    return sessions


def _next(value: str | None) -> str:
    """Where to go after logging in: a console page only, never another site (``//host``, ``/\\host``)."""
    if value and value.startswith(_HOME) and "//" not in value and "\\" not in value:
        return value
    return _HOME


def _peer(request: web.Request) -> str:
    return request.remote or "?"


def signed_in(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Run ``handler`` with the request's session; without one, a page goes to the login form."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        session = await _sessions(request).current(request)
        if session is None:
            if request.method in ("GET", "HEAD"):
                return redirect("/console/login?" + urlencode({"next": request.path_qs}))
            raise RequestRejected(401, "Not logged in", "Your console session has ended: log in again.")
        return await handler(request, session)

    return guarded


def _login_page(request: web.Request, *, next_page: str, error: str = "", status: int = 200) -> web.Response:
    sessions = _sessions(request)
    cookie, csrf = sessions.login_nonce()
    response = request.app[CONSOLE].pages.render(
        "login.html", status=status, csrf=csrf, next_page=next_page, error=error, bye="bye" in request.query
    )
    sessions.set_login_cookie(request, response, cookie)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    next_page = _next(request.query.get("next"))
    if await _sessions(request).current(request) is not None:
        return redirect(next_page)
    return _login_page(request, next_page=next_page)


async def login(request: web.Request) -> web.StreamResponse:
    sessions = _sessions(request)
    form = await checked_form(request, sessions.login_csrf(request))
    next_page = _next(form.get("next"))
    if not sessions.token_matches(form.get("token", "")):
        _log.warning("console login refused", reason="wrong admin token", peer=_peer(request))
        return _login_page(request, next_page=next_page, error="That is not the admin token.", status=401)
    response = redirect(next_page)
    await sessions.start(request, response)
    _log.info("console login", peer=_peer(request))
    return response


@signed_in
async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    await checked_form(request, session.csrf)
    response = redirect("/console/login?bye=1")
    await _sessions(request).end(request, session, response)
    _log.info("console logout", peer=_peer(request))
    return response
