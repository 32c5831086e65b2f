"""OAuth 2.0 client credentials for the Magnify Partner API: one cached access token per process.

The token is asked for with the documented scope and kept until shortly before ``expires_in`` runs
out (a tenth of its life early, at most a minute), so a request never leaves with a token about to
lapse. Concurrent callers share it: whoever finds it stale takes a lock and refreshes, and the
callers queued behind the lock find the fresh token instead of each asking for one. A 401 from the
API makes the client call ``invalidate`` with the token it sent; only a caller holding the current
token drops it, so however many requests saw the same 401, the next caller refreshes once.

After every token attempt, good or bad, ``on_attempt`` is told how it went: the poller publishes
that in Redis (``AUTH_STATE_KEY``) for readiness. Neither the secret nor a token is ever put in an
error message or a log line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr

from bridge.store import keys
from config.errors import MagnifyAuthError
from workers.destinations.http import post_form

__all__ = [
    "AUTH_STATE_KEY",
    "READ_SCOPE",
    "AttemptListener",
    "RequestListener",
    "TokenAttempt",
    "TokenManager",
    "status_class",
]

READ_SCOPE = "partner-api/motions.read"
AUTH_STATE_KEY = keys.MAGNIFY_AUTH
"""Redis key: JSON ``{"ok": bool, "error": str, "at": epoch_ms}`` of the latest token attempt (no expiry)."""

_EARLY_FRACTION = 0.1
_EARLY_MAX_SECONDS = 60.0
_DEFAULT_EXPIRES_IN = 3600  # the documented lifetime, for a response that leaves it out


@dataclass(frozen=True, slots=True)
class TokenAttempt:
    """How one request to the token endpoint went."""

    ok: bool
    error: str
    status: int | None


AttemptListener = Callable[[TokenAttempt], Awaitable[None]]
RequestListener = Callable[[str, str], Awaitable[None]]
"""Told ``(endpoint, status class)`` after every HTTP request: ``("token", "2xx")``, ``("metrics", "error")``."""


def status_class(status: int | None) -> str:
    """``2xx``, ``4xx``, ``5xx``..., or ``error`` when no response came back."""
    return "error" if status is None else f"{status // 100}xx"


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: float  # on the manager's clock


class TokenManager:
    """Fetches, caches and shares the access token; see the module docstring."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        timeout: float,
        scope: str = READ_SCOPE,
        on_attempt: AttemptListener | None = None,
        on_request: RequestListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._session = session
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._scope = scope
        self._on_attempt = on_attempt
        self._on_request = on_request
        self._clock = clock
        self._current: _Token | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        """Requests made to the token endpoint by this manager."""

    def _fresh(self) -> str | None:
        current = self._current
        return current.value if current is not None and self._clock() < current.refresh_at else None

    async def token(self) -> str:
        """A valid access token: the cached one, or one fresh from the token endpoint."""
        cached = self._fresh()
        if cached is not None:
            return cached
        async with self._lock:
            # Callers that queued behind a refresh find its result here.
            cached = self._fresh()
            if cached is not None:
                return cached
            self._current = await self._fetch()
            return self._current.value

    def invalidate(self, token: str) -> None:
        """Forget ``token`` after the API refused it, unless a newer token has replaced it already."""
        if self._current is not None and self._current.value == token:
            self._current = None

    async def _fetch(self) -> _Token:
        self.fetches += 1
        status: int | None = None
        try:
            status, body, retry_after = await self._post()
            token = self._parse(status, body, retry_after)
        except MagnifyAuthError as exc:
            await self._report(TokenAttempt(ok=False, error=str(exc), status=exc.status), status)
            raise
        await self._report(TokenAttempt(ok=True, error="", status=status), status)
        return token

    async def _report(self, attempt: TokenAttempt, status: int | None) -> None:
        if self._on_request is not None:
            await self._on_request("token", status_class(status))
        if self._on_attempt is not None:
            await self._on_attempt(attempt)

    async def _post(self) -> tuple[int, Any, float | None]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
            "scope": self._scope,
        }
        reply = await post_form(
            self._session,
            self._token_url,
            form,
            timeout=self._timeout,
            fail=lambda reason: MagnifyAuthError(f"magnify token endpoint: {reason}", transient=True),
        )
        return reply.status, reply.body, reply.retry_after

    def _parse(self, status: int, body: Any, retry_after: float | None) -> _Token:
        if status >= 400 or not isinstance(body, dict):
            raise _refusal(status, body, retry_after)
        access_token = body.get("access_token")
        token_type = body.get("token_type", "Bearer")
        expires_in = body.get("expires_in", _DEFAULT_EXPIRES_IN)
        if not isinstance(access_token, str) or not access_token:
            raise MagnifyAuthError("magnify token endpoint: the response has no access_token", status=status)
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise MagnifyAuthError(f"magnify token endpoint: unsupported token_type {token_type!r}", status=status)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in < 0:
            raise MagnifyAuthError(f"magnify token endpoint: bad expires_in {expires_in!r}", status=status)
        early = min(_EARLY_MAX_SECONDS, expires_in * _EARLY_FRACTION)
        return _Token(access_token, self._clock() + expires_in - early)


def _refusal(status: int, body: Any, retry_after: float | None) -> MagnifyAuthError:
    """The token endpoint's error (RFC 6749 ``error`` and ``error_description``) as a clear message."""
    detail = ""
    if isinstance(body, dict):
        parts = [str(body[name]) for name in ("error", "error_description") if body.get(name)]
        detail = ": " + ": ".join(parts) if parts else ""
    transient = status == 429 or status >= 500
    if status in (400, 401):
        what = "refused the client credentials or scope"
    elif transient:
        what = "is unavailable"
    else:
        what = "answered an unexpected response"
    message = f"magnify token endpoint {what} (HTTP {status}{detail})"
    return MagnifyAuthError(message, status=status, transient=transient, retry_after=retry_after)
