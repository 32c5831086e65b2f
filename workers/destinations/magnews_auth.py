"""Magnews access tokens: the static ``MAGNEWS_TOKEN``, or the OAuth 2.0 refresh-token flow.

The Magnews reference does not document a token endpoint, so the flow has the standard RFC 6749
shape (section 6): a form ``POST`` to ``MAGNEWS_TOKEN_URL`` of ``grant_type=refresh_token``,
``client_id``, ``client_secret`` and ``refresh_token``, answered with ``access_token``,
``expires_in`` and, when the provider rotates it, a new ``refresh_token``.

:class:`RefreshingToken` is shared by every process on one Redis, because a rotated refresh token
must never be presented twice (the provider has already invalidated it):

- The access token is cached in memory and in Redis (``keys.MAGNEWS_ACCESS_TOKEN``, expiring with
  the token), so every worker uses the same one.
- It is renewed shortly before it lapses (a tenth of its life early, at most a minute) by the
  first caller that finds it stale, under a Redis lease (``keys.MAGNEWS_TOKEN_LOCK``): one refresh at
  a time across all processes; in a process, concurrent callers wait on one lock and share the
  result. A 401 from the API makes the client ``invalidate`` the token it sent and retry once.
- The rotated refresh token is written to ``keys.MAGNEWS_REFRESH_TOKEN`` (with a fingerprint of the
  ``MAGNEWS_REFRESH_TOKEN`` setting it descends from) as soon as it is granted. At start the stored
  one is preferred; a setting whose fingerprint differs is a new token from an operator, and wins.
- A refusal (e.g. ``invalid_grant``) raises :class:`~config.errors.MagnewsAuthError`, which is
  transient: deliveries wait and retry while the logs and ``magbridge check`` name the problem.
  Refusals are remembered for a few seconds so that many jobs do not hammer the token endpoint.

No token or secret is ever logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import redis.asyncio as aioredis
import structlog
from pydantic import SecretStr
from redis.exceptions import RedisError

from bridge.store import keys
from bridge.store.lease import Lease
from bridge.store.records import text
from config.errors import ConfigError, MagnewsAuthError, PermanentDeliveryError
from config.settings import Settings
from workers.oauth import AccessToken, TokenCache, granted, read_grant, refusal_reason, request_token

__all__ = [
    "ACCESS_TOKEN_KEY",
    "REFRESH_LOCK_KEY",
    "REFRESH_TOKEN_KEY",
    "MagnewsTokens",
    "RefreshingToken",
    "StaticToken",
    "keep_fresh",
    "magnews_tokens",
]

REFRESH_TOKEN_KEY = keys.MAGNEWS_REFRESH_TOKEN
"""Redis hash: ``token`` (the latest refresh token), ``seed`` (fingerprint of the setting), ``rotated_at``."""
ACCESS_TOKEN_KEY = keys.MAGNEWS_ACCESS_TOKEN
"""Redis hash: ``token``, ``expires_at`` and ``refresh_at`` (epoch seconds); expires with the token."""
REFRESH_LOCK_KEY = keys.MAGNEWS_TOKEN_LOCK
"""Redis lease held by the one process that is talking to the token endpoint."""

_REFUSAL_COOLDOWN_SECONDS = 5.0
_LOCK_POLL_SECONDS = 0.05

_log = structlog.get_logger("magbridge.magnews_token")


class MagnewsTokens(Protocol):
    """What the Magnews client asks for a bearer token."""

    @property
    def renewable(self) -> bool:
        """Whether a 401 is worth one more try with a new token."""

    async def bearer(self) -> str:
        """A token to send now."""

    def invalidate(self, token: str) -> None:
        """The API refused ``token`` (401): do not hand it out again."""

    def describe(self) -> str:
        """How tokens are obtained, for ``magbridge check`` (never the token)."""


class StaticToken:
    """``MAGBRIDGE_MAGNEWS_TOKEN`` as it is: never renewed, a 401 is final."""

    renewable = False

    def __init__(self, token: SecretStr | None) -> None:
        self._token = token

    async def bearer(self) -> str:
        if self._token is None:
            raise PermanentDeliveryError("magnews: MAGBRIDGE_MAGNEWS_TOKEN is not set")
        return self._token.get_secret_value()

    def invalidate(self, token: str) -> None:
        """Nothing to do: there is no other token."""

    def describe(self) -> str:
        return "static token (MAGBRIDGE_MAGNEWS_TOKEN)"


def fingerprint(secret: SecretStr) -> str:
    """A short, one-way name for a refresh token (to tell a new setting from the one already used)."""
    return hashlib.sha256(secret.get_secret_value().encode()).hexdigest()[:16]


class RefreshingToken:
    """The refresh-token flow, coordinated through Redis; see the module docstring."""

    renewable = True

    def __init__(
        self,
        session: aiohttp.ClientSession,
        redis: aioredis.Redis,
        *,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        refresh_token: SecretStr,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._redis = redis
        self._lease = Lease(redis, REFRESH_LOCK_KEY)
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._setting = refresh_token
        self._seed = fingerprint(refresh_token)
        self._timeout = timeout
        self._clock = clock
        self._lease_seconds = 2 * timeout + 5
        # Times are epoch seconds (the clock is wall-clock time): the token is shared between processes.
        self._cache = TokenCache(self._obtain, self._usable)
        self._rejected: str | None = None
        self._unsaved: str | None = None  # a rotated refresh token Redis has not taken yet
        self._refused: tuple[float, MagnewsAuthError] | None = None
        self.refreshes = 0
        """Grants this process obtained from the token endpoint."""

    def describe(self) -> str:
        return f"refresh-token flow at {self._token_url} (client {self._client_id})"

    def _usable(self, access: AccessToken) -> bool:
        return access.value != self._rejected and self._clock() < access.refresh_at

    async def bearer(self) -> str:
        return await self._cache.value()

    def invalidate(self, token: str) -> None:
        self._rejected = token
        self._cache.forget(token)

    def seconds_until_refresh(self) -> float:
        """How long the current access token is still handed out without renewal (0 if there is none)."""
        current = self._cache.current
        return max(0.0, current.refresh_at - self._clock()) if current is not None else 0.0

    async def flush(self) -> None:
        """Write a rotated refresh token that Redis could not take earlier."""
        if self._unsaved is not None:
            async with self._cache.lock:  # not while a refresh may be rotating it
                if self._unsaved is not None:
                    await self._save_refresh_token(self._unsaved)

    async def _obtain(self) -> AccessToken:
        """The shared access token, or a new one from the one process holding the lease."""
        if self._refused is not None and self._clock() < self._refused[0]:
            refused = self._refused[1]
            raise MagnewsAuthError(refused.message, status=refused.status, retry_after=refused.retry_after)
        deadline = self._clock() + self._lease_seconds
        try:
            while True:
                shared = await self._shared()
                if shared is not None:
                    return shared
                lease = uuid.uuid4().hex
                if await self._lease.acquire(lease, int(self._lease_seconds * 1000)):
                    try:
                        # Another process may have finished a refresh between our look and our lease.
                        return await self._shared() or await self._refresh()
                    finally:
                        await self._lease.release(lease)
                if self._clock() > deadline:
                    raise MagnewsAuthError("magnews: another process is renewing the access token and has not finished")
                await asyncio.sleep(_LOCK_POLL_SECONDS)
        except (RedisError, OSError) as exc:
            raise MagnewsAuthError(f"magnews: cannot coordinate the token refresh, Redis: {exc}") from exc

    async def _shared(self) -> AccessToken | None:
        raw: dict[Any, Any] = await self._redis.hgetall(ACCESS_TOKEN_KEY)  # type: ignore[misc]
        fields = {text(key): text(value) for key, value in raw.items()}
        try:
            expires_at, refresh_at = float(str(fields["expires_at"])), float(str(fields["refresh_at"]))
            access = AccessToken(str(fields["token"]), expires_at, refresh_at)
        except (KeyError, ValueError):
            return None
        return access if self._usable(access) else None

    async def _refresh_token(self) -> tuple[str, str]:
        """``(refresh token, where it came from)``: unsaved, then Redis unless the setting changed, then the setting."""
        if self._unsaved is not None:
            return self._unsaved, "memory"
        raw: dict[Any, Any] = await self._redis.hgetall(REFRESH_TOKEN_KEY)  # type: ignore[misc]
        fields = {text(key): text(value) for key, value in raw.items()}
        stored = fields.get("token")
        if stored and fields.get("seed") == self._seed:
            return stored, "redis"
        return self._setting.get_secret_value(), "settings"

    async def _refresh(self) -> AccessToken:
        refresh_token, source = await self._refresh_token()
        rotated: str | None = None
        try:
            status, body = await self._post(refresh_token)
            rotated = _rotated(status, body)
            if rotated is not None:
                # Saved before anything else is looked at: the old one is dead from now on.
                await self._save_refresh_token(rotated)
            access = self._parse(status, body)
        except MagnewsAuthError as exc:
            self._refused = (self._clock() + _REFUSAL_COOLDOWN_SECONDS, exc)
            _log.error("magnews token refresh failed", error=str(exc), refresh_token_from=source)
            raise
        self._refused = None
        self._rejected = None
        self.refreshes += 1
        await self._save_access(access)
        _log.info(
            "magnews token refreshed",
            expires_in=round(access.expires_at - self._clock()),
            rotated=rotated is not None and rotated != refresh_token,
            refresh_token_from=source,
        )
        return access

    async def _save_refresh_token(self, refresh_token: str) -> None:
        """The one thing a restart cannot do without; kept in memory until Redis takes it."""
        mapping = {"token": refresh_token, "seed": self._seed, "rotated_at": f"{self._clock():.3f}"}
        try:
            await self._redis.hset(REFRESH_TOKEN_KEY, mapping=mapping)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            self._unsaved = refresh_token
            _log.error("magnews refresh token not saved, will retry", error=str(exc))
        else:
            self._unsaved = None

    async def _save_access(self, access: AccessToken) -> None:
        """Share the access token with the other processes; without Redis, each keeps its own."""
        mapping = {"token": access.value, "expires_at": access.expires_at, "refresh_at": access.refresh_at}
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(ACCESS_TOKEN_KEY, mapping=mapping)
                pipe.pexpireat(ACCESS_TOKEN_KEY, int(access.expires_at * 1000))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            _log.warning("magnews access token not shared", error=str(exc))

    async def _post(self, refresh_token: str) -> tuple[int, Any]:
        reply = await request_token(
            self._session,
            self._token_url,
            grant_type="refresh_token",
            client_id=self._client_id,
            client_secret=self._client_secret,
            fields={"refresh_token": refresh_token},
            timeout=self._timeout,
            fail=lambda reason: MagnewsAuthError(f"magnews token endpoint: {reason}"),
        )
        return reply.status, reply.body

    def _parse(self, status: int, body: Any) -> AccessToken:
        if not granted(status, body):
            raise _refusal(status, body)
        return read_grant(status, body, api="magnews", error=MagnewsAuthError, clock=self._clock)


def _rotated(status: int, body: Any) -> str | None:
    """The new refresh token of a successful grant, if the provider rotated it."""
    if not granted(status, body):
        return None
    rotated = body.get("refresh_token")
    return rotated if isinstance(rotated, str) and rotated else None


def _refusal(status: int, body: Any) -> MagnewsAuthError:
    """The token endpoint's RFC 6749 ``error``/``error_description`` as a message that says what to do."""
    reason = refusal_reason(status, body, refused="refused the client or the refresh token")
    hint = ""
    if status in (400, 401):
        hint = "; check MAGBRIDGE_MAGNEWS_CLIENT_ID/_CLIENT_SECRET, or set MAGBRIDGE_MAGNEWS_REFRESH_TOKEN to a new one"
    retry_after = _REFUSAL_COOLDOWN_SECONDS
    return MagnewsAuthError(f"magnews token endpoint {reason}{hint}", status=status, retry_after=retry_after)


def magnews_tokens(session: aiohttp.ClientSession, settings: Settings, redis: aioredis.Redis | None) -> MagnewsTokens:
    """The refresh-token flow when its settings are there (it needs Redis), else the static token."""
    if not settings.magnews_refresh_enabled:
        return StaticToken(settings.magnews_token)
    if redis is None:
        raise ConfigError("the Magnews refresh-token flow keeps its rotated refresh token in Redis; none was given")
    assert settings.magnews_client_id is not None and settings.magnews_client_secret is not None  # the validator
    assert settings.magnews_refresh_token is not None and settings.magnews_token_url is not None
    return RefreshingToken(
        session,
        redis,
        token_url=str(settings.magnews_token_url),
        client_id=settings.magnews_client_id,
        client_secret=settings.magnews_client_secret,
        refresh_token=settings.magnews_refresh_token,
        timeout=settings.http_timeout_seconds,
    )


async def keep_fresh(tokens: RefreshingToken, *, min_sleep: float = 1.0, max_sleep: float = 300.0) -> None:
    """Renew before expiry even while nothing is delivered, so the refresh token keeps rotating (an
    unused one may lapse on the provider's side); run as a task in each worker, cancelled at shutdown."""
    failures = 0
    while True:
        try:
            await tokens.bearer()
            await tokens.flush()
        except MagnewsAuthError as exc:
            failures += 1
            wait = min(max_sleep, _REFUSAL_COOLDOWN_SECONDS * 2 ** min(failures, 6))
            _log.warning("magnews token keeper waiting", error=str(exc), retry_in=wait)
        else:
            failures = 0
            wait = tokens.seconds_until_refresh()
        await asyncio.sleep(min(max_sleep, max(min_sleep, wait)))
