"""The one place where exceptions become HTTP responses: RFC 9457 problem documents.

Every document is of type ``about:blank``: the problem means what its status means, so its
``title`` is the status's phrase (RFC 9457 section 4.2.1; the names of RFC 9110, fixed here so
that they do not change with the Python version). What went wrong in particular is in ``detail``
and ``errors``. The short name the code gives each refusal (``RequestRejected.title``: "Invalid
JSON", "Too many events", ...) is kept on the response (``PROBLEM_NAME``) for the metrics' ``reason``
label and the log line.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from config.errors import ReplicasUnconfirmed, RequestRejected, StoreUnavailable

__all__ = ["PROBLEM_NAME", "problem_middleware", "problem_response", "status_title"]

_log = structlog.get_logger("magbridge.web")
# The short name of a refusal, for the metrics middleware to count refusals by reason.
PROBLEM_NAME = web.ResponseKey("problem_name", str)
# RFC 9110's names of the statuses the service answers with a problem document.
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_title(status: int) -> str:
    """The ``title`` of a problem document of type ``about:blank`` with this status."""
    if status in _TITLES:
        return _TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int, name: str, detail: str, *, instance: str = "", errors: list[dict[str, Any]] | None = None
) -> web.Response:
    """A problem document; ``name`` is the refusal's short name (not shown: see the module docstring)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": status_title(status),
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors:
        body["errors"] = errors
    response = web.json_response(body, status=status, content_type="application/problem+json")
    response[PROBLEM_NAME] = name
    if status == 503:
        response.headers["Retry-After"] = "5"
    return response


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    instance = request.path  # never the query string: it may carry the webhook token
    try:
        return await handler(request)
    except RequestRejected as exc:
        _log.info("request rejected", path=instance, status=exc.status, problem=exc.title, reason=exc.detail)
        response = problem_response(exc.status, exc.title, exc.detail, instance=instance, errors=exc.errors)
        # A subclass may name headers the status calls for (the admin API's WWW-Authenticate).
        response.headers.update(getattr(exc, "headers", {}))
        return response
    except ReplicasUnconfirmed as exc:
        _log.warning("replicas unconfirmed", path=instance, error=str(exc))
        return problem_response(
            503,
            "Replicas unconfirmed",
            f"stored on the Redis primary, but {exc.confirmed} of the {exc.required} replicas required "
            f"(MAGBRIDGE_REDIS_MIN_REPLICAS_ACK) confirmed it within {exc.timeout_ms} ms: not acknowledged; "
            "send it again (a resend is recognised as a duplicate)",
            instance=instance,
        )
    except (StoreUnavailable, RedisError) as exc:
        _log.warning("store unavailable", path=instance, error=str(exc))
        return problem_response(
            503,
            "Service unavailable",
            "the event store (Redis) is not answering; nothing was stored",
            instance=instance,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text or exc.reason
        if exc.status == 405:
            detail = f"{request.method} is not allowed on {instance}"
        elif exc.status == 413:
            detail = "the body is larger than the size limit"
        response = problem_response(exc.status, exc.reason, detail, instance=instance)
        if "Allow" in exc.headers:  # a 405 must say what is allowed (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        _log.exception("unhandled error", path=instance)
        return problem_response(500, "Internal server error", "an unexpected error; see the logs", instance=instance)
