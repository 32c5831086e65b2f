"""OAuth 2.0 client-credentials token endpoint of the Magnify simulator, and the tokens it issued.

``POST /oauth2/token`` takes a form-encoded body as in the spec's curl example; client credentials may
also come as HTTP Basic auth (RFC 6749 section 2.3.1). Errors use the RFC 6749 format
``{"error": ..., "error_description": ...}``. Tokens are opaque random strings (the real service issues
JWTs; clients must not look inside either way).
"""

from __future__ import annotations

import secrets
import time

from aiohttp import BasicAuth, web

__all__ = ["READ_SCOPE", "OAuthServer", "TokenStore", "oauth_error"]

READ_SCOPE = "partner-api/motions.read"
KNOWN_SCOPES = frozenset({READ_SCOPE})
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# RFC 6749 section 5.1: token responses must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> web.Response:
    """An RFC 6749 error response."""
    body = {"error": error, "error_description": description}
    return web.json_response(body, status=status, headers={**NO_STORE, **(headers or {})})


class TokenStore:
    """Issued access tokens and when they expire (monotonic clock)."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        self._expiry: dict[str, float] = {}
        self.issued = 0

    def reset(self) -> None:
        """Revoke every token and restart the count."""
        self._expiry.clear()
        self.issued = 0

    def issue(self) -> str:
        """A new token valid for ``ttl_seconds``."""
        now = time.monotonic()
        # Forget expired tokens here so the store stays small in a long-running simulator.
        self._expiry = {token: expiry for token, expiry in self._expiry.items() if expiry > now}
        token = secrets.token_urlsafe(32)
        self._expiry[token] = now + self.ttl_seconds
        self.issued += 1
        return token

    def problem(self, token: str) -> str | None:
        """Why ``token`` is not accepted, or ``None`` when it is valid."""
        expiry = self._expiry.get(token)
        if expiry is None:
            return "Invalid or missing OAuth 2.0 token"
        if expiry <= time.monotonic():
            return "OAuth 2.0 token has expired"
        return None


class OAuthServer:
    """The token endpoint for one registered client."""

    def __init__(self, client_id: str, client_secret: str, tokens: TokenStore) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self.tokens = tokens

    def authorize(self, request: web.Request) -> str | None:
        """Bearer check for the API routes (a :data:`~bridge.simulators.common.Authorizer`)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "Invalid or missing OAuth 2.0 token"
        return self.tokens.problem(token.strip())

    def _client_error(self, request: web.Request, client_id: str, client_secret: str) -> web.Response | None:
        # Compare in constant time, as a real authorization server would.
        if secrets.compare_digest(client_id, self._client_id) and secrets.compare_digest(
            client_secret, self._client_secret
        ):
            return None
        basic = request.headers.get("Authorization", "").lower().startswith("basic ")
        # RFC 6749 section 5.2: a client that tried HTTP Basic gets a WWW-Authenticate challenge.
        headers = {"WWW-Authenticate": 'Basic realm="magnify"'} if basic else None
        return oauth_error(401, "invalid_client", "Client authentication failed", headers)

    async def token_endpoint(self, request: web.Request) -> web.Response:
        """``POST /oauth2/token``: client credentials grant."""
        if request.content_type != FORM_CONTENT_TYPE:
            return oauth_error(400, "invalid_request", f"Content-Type must be {FORM_CONTENT_TYPE}")
        form = await request.post()
        client_id, client_secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        if "Authorization" in request.headers:
            try:
                basic = BasicAuth.decode(request.headers["Authorization"])
            except ValueError:  # also binascii.Error
                return oauth_error(401, "invalid_client", "Malformed Basic authorization header")
            client_id, client_secret = basic.login, basic.password
        failure = self._client_error(request, client_id, client_secret)
        if failure is not None:
            return failure
        grant_type = form.get("grant_type")
        if not grant_type:
            return oauth_error(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        scopes = str(form.get("scope", "")).split()
        if READ_SCOPE not in scopes or not KNOWN_SCOPES.issuperset(scopes):
            return oauth_error(400, "invalid_scope", f"scope must be {READ_SCOPE}")
        body = {
            "access_token": self.tokens.issue(),
            "token_type": "Bearer",
            "expires_in": int(self.tokens.ttl_seconds),
        }
        return web.json_response(body, headers=NO_STORE)
