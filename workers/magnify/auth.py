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

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr

from bridge.store import keys
from config.errors import MagnifyAuthError
from workers.oauth import AccessToken, TokenCache, granted, read_grant, refusal_reason, request_token, unavailable

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
        self._cache = TokenCache(self._fetch, lambda token: self._clock() < token.refresh_at)
        self.fetches = 0
        """Requests made to the token endpoint by this manager."""

    async def token(self) -> str:
        """A valid access token: the cached one, or one fresh from the token endpoint."""
        return await self._cache.value()

    def invalidate(self, token: str) -> None:
        """Forget ``token`` after the API refused it, unless a newer token has replaced it already."""
        self._cache.forget(token)

    async def _fetch(self) -> AccessToken:
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
        reply = await request_token(
            self._session,
            self._token_url,
            grant_type="client_credentials",
            client_id=self._client_id,
            client_secret=self._client_secret,
            fields={"scope": self._scope},
            timeout=self._timeout,
            fail=lambda reason: MagnifyAuthError(f"magnify token endpoint: {reason}", transient=True),
        )
        return reply.status, reply.body, reply.retry_after

    def _parse(self, status: int, body: Any, retry_after: float | None) -> AccessToken:
        if not granted(status, body):
            raise _refusal(status, body, retry_after)
        return read_grant(status, body, api="magnify", error=MagnifyAuthError, clock=self._clock, require_bearer=True)


def _refusal(status: int, body: Any, retry_after: float | None) -> MagnifyAuthError:
    """The token endpoint's error (RFC 6749 ``error`` and ``error_description``) as a clear message."""
    reason = refusal_reason(status, body, refused="refused the client credentials or scope")
    message = f"magnify token endpoint {reason}"
    return MagnifyAuthError(message, status=status, transient=unavailable(status), retry_after=retry_after)
