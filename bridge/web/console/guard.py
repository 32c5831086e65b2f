"""The console's one middleware: the console off without an admin token, strict security headers on
every response, and errors rendered as HTML pages.

Headers: a content security policy that allows the console's own stylesheet and script and nothing
inline (no ``<script>`` block, no ``style`` attribute, no ``on*`` handler), no framing
(``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), ``nosniff``, no ``Referer`` leaving the
page, and ``Cache-Control: no-store`` on every page (they show payloads; only the versioned assets
may be cached).

Errors: the JSON API's become problem documents in ``bridge.web.problems``; the console is read in
a browser, so the same exceptions (``RequestRejected``, Redis not answering, HTTP errors, anything
unexpected, logged) become an HTML page with the same status here. Handlers raise; none builds an
error page itself.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from bridge.web.console.state import CONSOLE
from bridge.web.problems import status_title
from config.errors import RequestRejected, StoreUnavailable

__all__ = ["SECURITY_HEADERS", "console_middleware"]

_log = structlog.get_logger("magbridge.console")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
_ROOT = "/console"


def _error_page(request: web.Request, status: int, detail: str) -> web.Response:
    console = request.app[CONSOLE]
    return console.pages.render("error.html", status=status, title=status_title(status), detail=detail)


async def _handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path  # never the query string
    try:
        if request.app[CONSOLE].sessions is None and request.match_info.route.name != "asset":
            raise RequestRejected(
                503, "Console disabled", "MAGBRIDGE_ADMIN_TOKEN is not set, so the console is off, as the admin API is"
            )
        return await handler(request)
    except RequestRejected as exc:
        _log.info("console request refused", path=path, status=exc.status, reason=exc.detail)
        return _error_page(request, exc.status, exc.detail)
    except (StoreUnavailable, RedisError) as exc:
        _log.warning("store unavailable", path=path, error=str(exc))
        return _error_page(request, 503, "The event store (Redis) is not answering; try again in a moment.")
    except web.HTTPException as exc:
        if exc.status == 404 and path == _ROOT:
            return web.Response(status=303, headers={"Location": f"{_ROOT}/"})
        if exc.status < 400:
            raise
        detail = f"{request.method} is not allowed here" if exc.status == 405 else (exc.text or exc.reason)
        return _error_page(request, exc.status, detail)
    except Exception:
        _log.exception("unhandled error", path=path)
        return _error_page(request, 500, "An unexpected error; see the logs.")


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _handle(request, handler)
    response.headers.update(SECURITY_HEADERS)
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response
