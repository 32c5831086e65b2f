"""The Magnews simulator's OAuth 2.0 refresh-token grant and the bearer check that goes with it.

The Magnews reference does not document its token endpoint, so this is the standard RFC 6749 shape
(section 6): a form ``POST`` of ``grant_type=refresh_token``, ``client_id``, ``client_secret`` and
``refresh_token`` answers ``{"access_token", "token_type": "Bearer", "expires_in", "refresh_token"}``.

Like a strict real provider, each grant *rotates* the refresh token (the old one stops working at
once, unless ``rotate`` is off) and access tokens expire after ``access_ttl`` seconds; an expired or
unknown access token gets 401 on every API route. The static token of the simulator is always valid,
so the static-token path of the bridge works as before.

Control route: ``GET|POST /_sim/oauth`` reads, or changes (``access_ttl``, ``rotate``,
``expire_access_tokens: true``, ``revoke_refresh_tokens: true``), the grant's state.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = [
    "MAGNEWS_OAUTH",
    "SIM_CLIENT_ID",
    "SIM_CLIENT_SECRET",
    "SIM_REFRESH_TOKEN",
    "TOKEN_PATH",
    "MagnewsOAuth",
    "oauth_control",
    "token_endpoint",
]

TOKEN_PATH = "/oauth2/token"
SIM_CLIENT_ID = "sim-magnews-client"
SIM_CLIENT_SECRET = "sim-magnews-secret"  # a simulator's well-known test credential
SIM_REFRESH_TOKEN = "sim-magnews-refresh"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class MagnewsOAuth:
    """Refresh tokens that rotate, access tokens that expire, and counts of what was granted."""

    def __init__(
        self,
        *,
        static_token: str,
        client_id: str = SIM_CLIENT_ID,
        client_secret: str = SIM_CLIENT_SECRET,
        refresh_token: str = SIM_REFRESH_TOKEN,
        access_ttl: float = 3600.0,
        rotate: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.static_token = static_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.initial_refresh_token = refresh_token
        self.initial_access_ttl = access_ttl
        self.initial_rotate = rotate
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Back to one valid refresh token (the initial one) and no access tokens."""
        self.access_ttl = self.initial_access_ttl
        self.rotate = self.initial_rotate
        self.refresh_tokens: set[str] = {self.initial_refresh_token}
        self.access_tokens: dict[str, float] = {}  # token -> expiry on the clock
        self.grants = 0
        self.refusals = 0
        self.expired_uses = 0

    def summary(self) -> dict[str, Any]:
        """Counts for ``/_sim/oauth`` and ``/_sim/state``."""
        now = self._clock()
        return {
            "grants": self.grants,
            "refusals": self.refusals,
            "expired_uses": self.expired_uses,
            "access_ttl": self.access_ttl,
            "rotate": self.rotate,
            "live_access_tokens": sum(1 for expiry in self.access_tokens.values() if expiry > now),
            "valid_refresh_tokens": len(self.refresh_tokens),
        }

    def authorize(self, request: web.Request) -> str | None:
        """``None`` for the static token or a live access token, else why not (answered 401)."""
        header = request.headers.get("Authorization")
        if header is None:
            return "missing Authorization header"
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            return "invalid bearer token"
        if _same(token, self.static_token):
            return None
        expiry = self.access_tokens.get(token)
        if expiry is None:
            return "invalid bearer token"
        if expiry <= self._clock():
            self.expired_uses += 1
            return "access token expired"
        return None

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """``(status, JSON body)`` of one token request, as RFC 6749 section 5 answers it."""
        if form.get("grant_type") != "refresh_token":
            return self.refuse(400, "unsupported_grant_type", "only grant_type=refresh_token is supported")
        client_ok = _same(form.get("client_id", ""), self.client_id) and _same(
            form.get("client_secret", ""), self.client_secret
        )
        if not client_ok:
            return self.refuse(401, "invalid_client", "unknown client or wrong client secret")
        presented = form.get("refresh_token", "")
        if not presented:
            return self.refuse(400, "invalid_request", "refresh_token is required")
        if presented not in self.refresh_tokens:
            return self.refuse(400, "invalid_grant", "the refresh token is invalid, expired or was rotated")
        refresh_token = presented
        if self.rotate:
            self.refresh_tokens.discard(presented)
            refresh_token = "sim-magnews-refresh-" + secrets.token_urlsafe(16)
            self.refresh_tokens.add(refresh_token)
        access_token = "sim-magnews-access-" + secrets.token_urlsafe(16)
        self.access_tokens[access_token] = self._clock() + self.access_ttl
        self.grants += 1
        body = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "refresh_token": refresh_token,
        }
        return 200, body

    def expire_access_tokens(self) -> None:
        """Every access token issued so far lapses now."""
        now = self._clock()
        self.access_tokens = {token: min(expiry, now) for token, expiry in self.access_tokens.items()}

    def refuse(self, status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
        """An RFC 6749 error answer, counted."""
        self.refusals += 1
        return status, {"error": error, "error_description": description}


MAGNEWS_OAUTH = web.AppKey("magnews_oauth", MagnewsOAuth)


async def token_endpoint(request: web.Request) -> web.Response:
    """``POST /oauth2/token``: the refresh-token grant (form-encoded, as RFC 6749 wants)."""
    oauth = request.app[MAGNEWS_OAUTH]
    if request.content_type != "application/x-www-form-urlencoded":
        status, body = oauth.refuse(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
    else:
        form = await request.post()
        status, body = oauth.grant({key: str(value) for key, value in form.items()})
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


async def oauth_control(request: web.Request) -> web.Response:
    """``GET /_sim/oauth``: the summary; ``POST``: change ``access_ttl``/``rotate``, expire or revoke tokens."""
    oauth = request.app[MAGNEWS_OAUTH]
    if request.method == "POST":
        try:
            changes = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(changes, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if isinstance(changes.get("access_ttl"), int | float) and not isinstance(changes["access_ttl"], bool):
            oauth.access_ttl = float(changes["access_ttl"])
        if isinstance(changes.get("rotate"), bool):
            oauth.rotate = changes["rotate"]
        if changes.get("expire_access_tokens") is True:
            oauth.expire_access_tokens()
        if changes.get("revoke_refresh_tokens") is True:
            oauth.refresh_tokens.clear()
    return web.json_response(oauth.summary())
