"""Magnews REST API v19 client: contact merges (single and batch), the contacts query and the account ping.

A merge's answer is read field by field, as the spec shows it in two shapes: the response table
(``ok``, ``pk``, ``idcontact``, ``action``, ``errors``) and the examples (``idcontact``, ``result``,
``message``, no ``ok``); ``batchmerge`` answers a bare array of the one or ``{"results": [...],
"totalProcessed": n}`` of the other. Per contact (:func:`merge_outcome`):

- success: ``ok: true``; or no ``ok``, an outcome (``result``, ``action`` or ``idcontact``) and no errors;
- permanent failure: ``ok: false`` or a non-empty ``errors`` (Magnews answers data errors with HTTP 200),
  and any 4xx ``{error, debugMessage}``;
- unknown outcome: a 2xx with neither ``ok`` nor an outcome, or a batch answer whose results cannot be
  paired with its contacts (``MergeOutcomeUnknown``, a ``TransientDeliveryError``). The merge sender
  reads the contact back (``merge_readback``) and retries only what it does not find; a merge is
  idempotent by primary key, so sending it again cannot make a second contact.

The bearer token comes from :mod:`workers.destinations.magnews_auth`: the static token, or the refresh-token
flow, in which a 401 drops the token and the call is tried once more with a fresh one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import redis.asyncio as aioredis
from pydantic import SecretStr

from config.errors import MergeOutcomeUnknown, PermanentDeliveryError, TransientDeliveryError
from config.settings import Settings
from workers.destinations.http import ApiResponse, call_api
from workers.destinations.magnews_auth import MagnewsTokens, StaticToken, magnews_tokens

__all__ = ["MagnewsClient", "merge_outcome"]

_OUTCOME_FIELDS = ("result", "action", "idcontact")


def merge_outcome(item: Any, status: int, text: str) -> ApiResponse | Exception:
    """One contact's merge answer as a success, a ``PermanentDeliveryError`` or, when the answer says
    neither, ``MergeOutcomeUnknown`` (read back, and retried if not found)."""
    if not isinstance(item, dict):
        return MergeOutcomeUnknown("magnews: merge outcome unknown: not a JSON object", status=status, body=text)
    errors = item.get("errors")
    if item.get("ok") is False or errors:
        return PermanentDeliveryError("magnews: merge refused (ok: false or errors)", status=status, body=text)
    if item.get("ok") is True or (
        item.get("ok") is None and any(item.get(name) is not None for name in _OUTCOME_FIELDS)
    ):
        return ApiResponse(status=status, body=item, text=text, headers={})
    return MergeOutcomeUnknown(
        "magnews: merge outcome unknown: neither ok nor result, action or idcontact", status=status, body=text
    )


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
        token = await self.tokens.bearer()
        try:
            return await send(token)
        except PermanentDeliveryError as exc:
            if exc.status == 401:
                self.tokens.invalidate(token)  # the gate pauses Magnews; its probe starts with a new token
            raise

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
        outcome = merge_outcome(response.body, response.status, response.text)
        if isinstance(outcome, Exception):
            raise outcome
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
            # A 2xx that cannot be paired with the contacts: what happened to each is unknown.
            raise MergeOutcomeUnknown(
                f"magnews: batchmerge outcome unknown: {len(items) if isinstance(items, list) else 'no'} results "
                f"for {len(contacts)} contacts",
                status=response.status,
                body=response.text,
            )
        return [merge_outcome(item, response.status, orjson.dumps(item).decode()[:2000]) for item in items]

    async def query_contacts(self, query: str) -> list[dict[str, Any]]:
        """``GET /v19/contacts/query?query=<MQL>``: the contacts the query selects, as the example
        shows them (a JSON array of ``{idcontact, iddatabase, status, fields}``). Another answer is
        an unknown outcome (``TransientDeliveryError``): retried, and dead-lettered if it persists."""
        response = await self._request("GET", "/contacts/query?" + urlencode({"query": query}, quote_via=quote))
        contacts = response.body
        if not isinstance(contacts, list) or not all(isinstance(contact, dict) for contact in contacts):
            raise TransientDeliveryError(
                "magnews: contacts query answer is not a list of contacts", status=response.status, body=response.text
            )
        return contacts

    async def ping(self) -> None:
        """Authenticate with ``GET /v19/account/userinfo``; raises ``DeliveryError`` when refused."""
        await self._request("GET", "/account/userinfo")
