"""The one place where exceptions become HTTP responses: RFC 9457 problem documents."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from config.errors import RequestRejected, StoreUnavailable

__all__ = ["PROBLEM_TITLE", "problem_middleware", "problem_response"]

_log = structlog.get_logger("magbridge.web")
# The title of a problem response, for the metrics middleware to count refusals by reason.
PROBLEM_TITLE = web.ResponseKey("problem_title", str)


def problem_response(
    status: int, title: str, detail: str, *, instance: str = "", errors: list[dict[str, Any]] | None = None
) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors:
        body["errors"] = errors
    response = web.json_response(body, status=status, content_type="application/problem+json")
    response[PROBLEM_TITLE] = title
    if status == 503:
        response.headers["Retry-After"] = "5"
    return response


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    instance = request.path  # never the query string: it may carry the webhook token
    try:
        return await handler(request)
    except RequestRejected as exc:
        _log.info("request rejected", path=instance, status=exc.status, reason=exc.detail)
        response = problem_response(exc.status, exc.title, exc.detail, instance=instance, errors=exc.errors)
        # A subclass may name headers the status calls for (the admin API's WWW-Authenticate).
        response.headers.update(getattr(exc, "headers", {}))
        return response
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
