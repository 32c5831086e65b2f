"""What the OAuth 2.0 token clients share: the token request, its answer, and the cached token.

RFC 6749 token endpoints answer one way whatever the grant: a form ``POST`` of ``grant_type``,
``client_id``, ``client_secret`` and the grant's own fields, answered with ``access_token``,
``expires_in`` (and ``token_type``), or an error status with ``error`` and ``error_description``.

- :func:`request_token` sends that request (a timeout or connection error is the caller's ``fail``).
- :func:`read_grant` checks the answer and times the token's renewal: a tenth of its life early,
  at most a minute, so a request never leaves with a token about to lapse.
- :func:`refusal_reason` words an error answer; each vendor adds its own error type and hints.
- :class:`TokenCache` holds a process's current token: whoever finds it stale renews it, and the
  callers queued behind find the renewed one instead of each asking for one.

The vendors' flows stay in their modules: Magnews (``workers.destinations.magnews_auth``, refresh
token shared through Redis) and Magnify (``workers.magnify.auth``, client credentials). Neither a
secret nor a token is ever put in an error message here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from pydantic import SecretStr

from workers.destinations.http import FormReply, post_form

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "AccessToken",
    "AuthErrorFactory",
    "TokenCache",
    "granted",
    "read_grant",
    "refresh_at",
    "refusal_reason",
    "request_token",
    "unavailable",
]

DEFAULT_EXPIRES_IN = 3600.0
"""Seconds a token lives when the answer leaves ``expires_in`` out (the usual documented lifetime)."""
_EARLY_FRACTION = 0.1
_EARLY_MAX_SECONDS = 60.0


class AuthErrorFactory(Protocol):
    """A vendor's token error, built from a message and the token endpoint's status."""

    def __call__(self, message: str, *, status: int | None = None) -> Exception: ...


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_at: float  # on the clock of whoever obtained it
    refresh_at: float  # when it stops being handed out: renewed from then on


def refresh_at(now: float, expires_in: float) -> float:
    """When a token granted at ``now`` for ``expires_in`` seconds is renewed."""
    early = min(_EARLY_MAX_SECONDS, expires_in * _EARLY_FRACTION)
    return now + expires_in - early


async def request_token(
    session: aiohttp.ClientSession,
    url: str,
    *,
    grant_type: str,
    client_id: str,
    client_secret: SecretStr,
    fields: dict[str, str],
    timeout: float,
    fail: Callable[[str], Exception],
) -> FormReply:
    """POST the grant to the token endpoint and read its answer, whatever the status.

    A timeout or connection error raises ``fail(reason)``, the vendor's own error."""
    form = {
        "grant_type": grant_type,
        "client_id": client_id,
        "client_secret": client_secret.get_secret_value(),
        **fields,
    }
    return await post_form(session, url, form, timeout=timeout, fail=fail)


def granted(status: int, body: Any) -> bool:
    """Whether the answer is a grant to read (else an error to word with :func:`refusal_reason`)."""
    return status < 400 and isinstance(body, dict)


def read_grant(
    status: int,
    body: dict[str, Any],
    *,
    api: str,
    error: AuthErrorFactory,
    clock: Callable[[], float],
    require_bearer: bool = False,
) -> AccessToken:
    """The access token of a grant (see :func:`granted`), timed on ``clock``; ``error`` if it is unusable."""
    value = body.get("access_token")
    expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
    if not isinstance(value, str) or not value:
        raise error(f"{api} token endpoint: the response has no access_token", status=status)
    if require_bearer:
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise error(f"{api} token endpoint: unsupported token_type {token_type!r}", status=status)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in < 0:
        raise error(f"{api} token endpoint: bad expires_in {expires_in!r}", status=status)
    now = clock()
    return AccessToken(value, now + expires_in, refresh_at(now, expires_in))


def unavailable(status: int) -> bool:
    """Whether an error status says the endpoint is down or busy (worth a retry), not a refusal."""
    return status == 429 or status >= 500


def refusal_reason(status: int, body: Any, *, refused: str) -> str:
    """``"<what> (HTTP <status>: <error>: <error_description>)"`` for an error answer; ``refused``
    is what a 400 or 401 means for this grant."""
    detail = ""
    if isinstance(body, dict):
        parts = [str(body[name]) for name in ("error", "error_description") if body.get(name)]
        detail = ": " + ": ".join(parts) if parts else ""
    if status in (400, 401):
        what = refused
    elif unavailable(status):
        what = "is unavailable"
    else:
        what = "answered an unexpected response"
    return f"{what} (HTTP {status}{detail})"


class TokenCache:
    """One process's current access token, renewed by one caller at a time.

    ``renew`` obtains a new token; ``usable`` says whether one may still be handed out. ``lock`` is
    held while renewing, and may be taken by the owner for other work that must not overlap it."""

    def __init__(self, renew: Callable[[], Awaitable[AccessToken]], usable: Callable[[AccessToken], bool]) -> None:
        self._renew = renew
        self._usable = usable
        self.current: AccessToken | None = None
        self.lock = asyncio.Lock()

    async def value(self) -> str:
        """The current token, or a new one if it is no longer usable."""
        current = self.current
        if current is not None and self._usable(current):
            return current.value
        async with self.lock:  # callers queued here find the renewal of the first one done
            current = self.current
            if current is None or not self._usable(current):
                current = self.current = await self._renew()
            return current.value

    def forget(self, token: str) -> None:
        """Drop ``token`` if it is still the current one (a newer token may have replaced it already)."""
        if self.current is not None and self.current.value == token:
            self.current = None
