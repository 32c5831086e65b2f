"""Magnews REST API v19 client: contact merges (single and batch) and the account ping.

Magnews answers data errors with HTTP 200 and ``"ok": false``; those are permanent failures.
The bearer token comes from :mod:`workers.destinations.magnews_auth`: the static token, or the refresh-token
flow, in which a 401 drops the token and the call is tried once more with a fresh one.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from pydantic import SecretStr

from config.errors import PermanentDeliveryError
from config.settings import Settings
from workers.destinations.http import ApiResponse, call_api
from workers.destinations.magnews_auth import MagnewsTokens, StaticToken, magnews_tokens

__all__ = ["MagnewsClient"]


class MagnewsClient:
    """Bearer-token client; ``base_url`` is e.g. ``https://ws-mn1.mag-news.it/ws/rest/api``."""

    api = "magnews"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: SecretStr | None,
        *,
        timeout: float,
        tokens: MagnewsTokens | None = None,
    ):
        self._session = session
        self._base_url = base_url.rstrip("/")
        self.tokens: MagnewsTokens = tokens if tokens is not None else StaticToken(token)
        self._timeout = timeout

    @classmethod
    def from_settings(
        cls, session: aiohttp.ClientSession, settings: Settings, *, redis: aioredis.Redis | None = None
    ) -> MagnewsClient:
        """The refresh-token flow needs ``redis`` (the rotated refresh token lives there)."""
        return cls(
            session,
            str(settings.magnews_base_url),
            settings.magnews_token,
            timeout=settings.http_timeout_seconds,
            tokens=magnews_tokens(session, settings, redis),
        )

    @staticmethod
    def _headers(token: str, idempotency_key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    async def _request(
        self, method: str, path: str, *, json_body: Any = None, idempotency_key: str | None = None
    ) -> ApiResponse:
        url = f"{self._base_url}/v19{path}"

        async def send(token: str) -> ApiResponse:
            return await call_api(
                self._session,
                method,
                url,
                api=self.api,
                headers=self._headers(token, idempotency_key),
                json_body=json_body,
                timeout=self._timeout,
            )

        token = await self.tokens.bearer()
        try:
            return await send(token)
        except PermanentDeliveryError as exc:
            if exc.status != 401 or not self.tokens.renewable:
                raise
            self.tokens.invalidate(token)
        # One refresh and one more try: the 401 means the request was not carried out.
        return await send(await self.tokens.bearer())

    async def request(self, method: str, path: str, *, json_body: Any = None) -> ApiResponse:
        """Any ``/v19`` call (``path`` starts after ``/v19``) with the bearer; the webhook commands use it."""
        return await self._request(method, path, json_body=json_body)

    async def merge_contact(
        self, values: dict[str, str], options: dict[str, Any], *, idempotency_key: str
    ) -> ApiResponse:
        """``POST /v19/contacts/merge``: insert or update by the database's primary key."""
        response = await self._request(
            "POST",
            "/contacts/merge",
            json_body={"values": values, "options": options},
            idempotency_key=idempotency_key,
        )
        if not isinstance(response.body, dict) or response.body.get("ok") is not True:
            raise PermanentDeliveryError("magnews: merge answered ok: false", status=200, body=response.text)
        return response

    async def batch_merge(
        self, database: int, contacts: list[dict[str, str]], options: dict[str, Any], idempotency_key: str
    ) -> list[ApiResponse | Exception]:
        """``POST /v19/contacts/batchmerge``: one result per contact, in order; ``ok: false`` items fail alone."""
        body = {
            "iddatabase": database,
            "contacts": [{"values": [{"field": k, "value": v} for k, v in values.items()]} for values in contacts],
            "options": options,
        }
        response = await self._request("POST", "/contacts/batchmerge", json_body=body, idempotency_key=idempotency_key)
        # The reference shows both a bare array and an object with "results"; accept either.
        items = response.body.get("results") if isinstance(response.body, dict) else response.body
        if not isinstance(items, list) or len(items) != len(contacts):
            raise PermanentDeliveryError(
                f"magnews: batchmerge answered {len(items) if isinstance(items, list) else 'no'} results "
                f"for {len(contacts)} contacts",
                status=response.status,
                body=response.text,
            )
        results: list[ApiResponse | Exception] = []
        for item in items:
            text = orjson.dumps(item).decode()[:2000]
            if isinstance(item, dict) and item.get("ok") is True:
                results.append(ApiResponse(status=response.status, body=item, text=text, headers={}))
            else:
                results.append(PermanentDeliveryError("magnews: merge answered ok: false", status=200, body=text))
        return results

    async def ping(self) -> None:
        """Authenticate with ``GET /v19/account/userinfo``; raises ``DeliveryError`` when refused."""
        await self._request("GET", "/account/userinfo")
