"""``X-Request-ID``: one id per request, taken from the client when it is sane, else made here.

The id is echoed in the response (problem documents included) and bound as ``request_id`` in
structlog's context variables for as long as the request runs, so every line the request logs
(``event received``, ``request rejected``, ...) carries it. A client's id is used as given only
when it is 1 to 128 characters of letters, digits and ``._:=+/-`` (a UUID, a trace id, base64),
beginning with a letter or digit: nothing else reaches the logs from that header. Otherwise a
random 32-hex-digit id is made.
"""

from __future__ import annotations

import re
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["REQUEST_ID", "REQUEST_ID_HEADER", "request_id", "request_id_middleware"]

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = web.RequestKey("request_id", str)
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+/-]{0,127}")


def request_id(given: str | None) -> str:
    """``given`` when it is a sane id, else a new one."""
    if given is not None and _SANE.fullmatch(given):
        return given
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: the id is bound before anything logs, and set on whatever response leaves."""
    rid = request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = rid
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # the problem middleware lets only < 400 through (redirects)
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
    if not response.prepared:  # a streamed response has sent its headers already
        response.headers[REQUEST_ID_HEADER] = rid
    return response
