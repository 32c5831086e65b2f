"""MagicBell API v2 client: broadcasts (``POST /broadcasts``), built as the reference describes."""

from __future__ import annotations

import aiohttp
from pydantic import SecretStr

from config.errors import PermanentDeliveryError
from config.settings import Settings
from workers.destinations.http import ApiResponse, call_api

__all__ = ["MagicBellClient"]


class MagicBellClient:
    """Project-JWT client; ``base_url`` is e.g. ``https://api.magicbell.com/v2``."""

    api = "magicbell"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: SecretStr | None, *, timeout: float):
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout

    @classmethod
    def from_settings(cls, session: aiohttp.ClientSession, settings: Settings) -> MagicBellClient:
        return cls(
            session, str(settings.magicbell_base_url), settings.magicbell_token, timeout=settings.http_timeout_seconds
        )

    def _headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        if self._token is None:
            raise PermanentDeliveryError("magicbell: MAGBRIDGE_MAGICBELL_TOKEN is not set")
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}", "Accept": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    async def create_broadcast(self, broadcast: dict[str, object], *, idempotency_key: str) -> ApiResponse:
        """Create a broadcast. A 409 for our own stable ``id`` means an earlier try got through."""
        try:
            return await call_api(
                self._session,
                "POST",
                f"{self._base_url}/broadcasts",
                api=self.api,
                headers=self._headers(idempotency_key),
                json_body=broadcast,
                timeout=self._timeout,
            )
        except PermanentDeliveryError as exc:
            if exc.status == 409:
                return ApiResponse(status=409, body=None, text=exc.body or "", headers={})
            raise

    async def ping(self) -> None:
        """Authenticate with a cheap read; raises ``DeliveryError`` when the token is refused."""
        await call_api(
            self._session,
            "GET",
            f"{self._base_url}/broadcasts?limit=1",
            api=self.api,
            headers=self._headers(),
            timeout=self._timeout,
        )
