"""Console sessions: the admin token, entered once, exchanged for a signed and expiring cookie.

A cookie's value is ``payload.signature``: the payload is base64url JSON (``p`` its purpose, ``s`` the
session id or login nonce, ``e`` when it expires, epoch seconds), the signature an HMAC-SHA256 over
it with a key derived from ``MAGBRIDGE_ADMIN_TOKEN``, so a new admin token logs everyone out. The
cookie is ``HttpOnly``, ``SameSite=Strict``, limited to ``/console`` and ``Secure`` over https (or
with ``MAGBRIDGE_CONSOLE_SECURE_COOKIE=true`` behind a proxy that ends TLS).

A session also lives in Redis (``keys.console_session``) until it expires; logging out deletes it,
so a copied cookie is worthless once its owner has logged out. The CSRF token of a form is an HMAC of
the session id (``csrf_token``): nothing to store, and it differs per session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from bridge.store import keys
from bridge.web.state import REDIS
from config.errors import StoreUnavailable
from config.settings import Settings

__all__ = ["LOGIN_COOKIE", "SESSION_COOKIE", "Session", "Sessions"]

SESSION_COOKIE = "magbridge_console"
LOGIN_COOKIE = "magbridge_console_login"
_PATH = "/console"
_LOGIN_SECONDS = 600  # the login form's own CSRF nonce
_KEY_LABEL = b"magbridge console session v1"


def _redis(request: web.Request) -> aioredis.Redis:
    return request.config_dict[REDIS]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in console session; ``csrf`` is the token its forms carry."""

    id: str
    expires: int
    csrf: str


class Sessions:
    """Signs and checks the console's cookies; needs the admin token (the console is off without one)."""

    def __init__(self, settings: Settings, admin_token: str):
        self._key = hmac.new(admin_token.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self._token = admin_token.encode()
        self._lifetime = settings.console_session_minutes * 60
        self._secure = settings.console_secure_cookie

    # --- signing -------------------------------------------------------------------------------------

    def _mac(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}|{data}".encode(), hashlib.sha256).digest())

    def _sign(self, purpose: str, subject: str, expires: int) -> str:
        payload = _b64(json.dumps({"p": purpose, "s": subject, "e": expires}, separators=(",", ":")).encode())
        return f"{payload}.{self._mac('cookie', payload)}"

    def _unsign(self, purpose: str, value: str | None) -> tuple[str, int] | None:
        """Subject and expiry of a cookie this console signed for ``purpose``, unless it has expired."""
        if not value or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac("cookie", payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(data, dict) or data.get("p") != purpose or not isinstance(data.get("s"), str):
            return None
        expires = data.get("e")
        if not isinstance(expires, int) or expires <= time.time():
            return None
        return str(data["s"]), expires

    def csrf_token(self, subject: str) -> str:
        """The token the forms of a session (or of the login page) carry."""
        return self._mac("csrf", subject)

    def token_matches(self, given: str) -> bool:
        """The admin token, compared in constant time."""
        return hmac.compare_digest(given.encode(), self._token)

    # --- cookies -------------------------------------------------------------------------------------

    def _set(self, request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        secure = request.secure if self._secure is None else self._secure
        response.set_cookie(name, value, max_age=max_age, path=_PATH, secure=secure, httponly=True, samesite="Strict")

    def _clear(self, response: web.StreamResponse, name: str) -> None:
        response.del_cookie(name, path=_PATH, httponly=True, samesite="Strict")

    def login_nonce(self) -> tuple[str, str]:
        """A fresh login form: the value of its nonce cookie, and the CSRF token the form carries."""
        nonce = secrets.token_urlsafe(18)
        cookie = self._sign("login", nonce, int(time.time()) + _LOGIN_SECONDS)
        return cookie, self.csrf_token(f"login:{nonce}")

    def set_login_cookie(self, request: web.Request, response: web.StreamResponse, cookie: str) -> None:
        self._set(request, response, LOGIN_COOKIE, cookie, _LOGIN_SECONDS)

    def login_csrf(self, request: web.Request) -> str | None:
        """The CSRF token the login form must carry, or ``None`` without a valid login cookie."""
        signed = self._unsign("login", request.cookies.get(LOGIN_COOKIE))
        return None if signed is None else self.csrf_token(f"login:{signed[0]}")

    # --- sessions ------------------------------------------------------------------------------------

    async def start(self, request: web.Request, response: web.StreamResponse) -> Session:
        """A new session, recorded in Redis and set as the cookie of ``response``."""
        session_id = secrets.token_urlsafe(24)
        expires = int(time.time()) + self._lifetime
        try:
            await _redis(request).set(keys.console_session(session_id), str(int(time.time() * 1000)), ex=self._lifetime)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        self._set(request, response, SESSION_COOKIE, self._sign("session", session_id, expires), self._lifetime)
        self._clear(response, LOGIN_COOKIE)
        return Session(session_id, expires, self.csrf_token(session_id))

    async def current(self, request: web.Request) -> Session | None:
        """The request's session: a cookie signed here, not expired, and not logged out."""
        signed = self._unsign("session", request.cookies.get(SESSION_COOKIE))
        if signed is None:
            return None
        session_id, expires = signed
        try:
            alive = await _redis(request).exists(keys.console_session(session_id))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        if not alive:
            return None
        return Session(session_id, expires, self.csrf_token(session_id))

    async def end(self, request: web.Request, session: Session, response: web.StreamResponse) -> None:
        """Log out: the session is deleted from Redis and its cookie cleared."""
        try:
            await _redis(request).delete(keys.console_session(session.id))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        self._clear(response, SESSION_COOKIE)
