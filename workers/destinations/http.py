"""One HTTP call to a remote API, with its failure classified for the retry policy.

Transient (retry): connection errors, timeouts, 408, 429, 5xx; ``Retry-After`` is kept.
Permanent (dead letter): every other 4xx. The response body is kept for the dead letter.
Credentials refused: 401 and 403 raise ``CredentialsRefused`` (a permanent error for the one call);
a delivery's gate pauses the destination instead of dead-lettering it (``limits.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from config.errors import CredentialsRefused, PermanentDeliveryError, TransientDeliveryError

__all__ = ["ApiResponse", "FormReply", "call_api", "parse_retry_after", "post_form"]

_TRANSIENT_STATUSES = frozenset({408, 429})
_REFUSED_STATUSES = frozenset({401, 403})
_BODY_KEPT = 2000  # characters of a response body kept with an attempt


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: Any
    text: str
    headers: dict[str, str]


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


async def call_api(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    api: str,
    headers: dict[str, str],
    json_body: Any = None,
    timeout: float,
) -> ApiResponse:
    """Send one request; return the 2xx response or raise a classified ``DeliveryError``."""
    try:
        async with session.request(
            method, url, json=json_body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            text = await response.text()
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            response_headers = dict(response.headers)
    except TimeoutError as exc:
        raise TransientDeliveryError(f"{api}: timed out after {timeout:g}s") from exc
    except (aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError) as exc:
        raise TransientDeliveryError(f"{api}: {type(exc).__name__}: {exc}") from exc
    kept = text[:_BODY_KEPT]
    if status in _TRANSIENT_STATUSES or status >= 500:
        raise TransientDeliveryError(f"{api}: HTTP {status}", status=status, body=kept, retry_after=retry_after)
    if status in _REFUSED_STATUSES:
        raise CredentialsRefused(f"{api}: HTTP {status}, credentials refused", status=status, body=kept)
    if status >= 400:
        raise PermanentDeliveryError(f"{api}: HTTP {status}", status=status, body=kept)
    try:
        body = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        body = None
    return ApiResponse(status=status, body=body, text=kept, headers=response_headers)


@dataclass(frozen=True, slots=True)
class FormReply:
    status: int
    body: Any  # the parsed JSON, or None
    retry_after: float | None


async def post_form(
    session: aiohttp.ClientSession,
    url: str,
    form: dict[str, str],
    *,
    timeout: float,
    fail: Callable[[str], Exception],
) -> FormReply:
    """POST a form (an OAuth token request) and read the JSON answer, whatever its status.

    A timeout or connection error raises ``fail(reason)``: each token manager has its own error.
    """
    try:
        async with session.post(
            url, data=form, headers={"Accept": "application/json"}, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            text = await response.text()
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except TimeoutError as exc:
        raise fail(f"timed out after {timeout:g}s") from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise fail(f"unreachable: {type(exc).__name__}: {exc}") from exc
    try:
        body = json.loads(text) if text else None
    except json.JSONDecodeError:
        body = None
    return FormReply(status, body, retry_after)
