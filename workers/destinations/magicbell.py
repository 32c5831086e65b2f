"""MagicBell API v2 client: broadcasts (``POST /broadcasts``), built as the reference describes.

The reference documents neither ``Idempotency-Key`` nor what a create with an existing ``id`` gets
(409, 422, the broadcast again...). So the bridge does not rely on either: each broadcast has a
stable ``id`` (derived from its action key), and whenever an earlier attempt's outcome is unknown
(``read_back``: it timed out, lost its connection or got a 5xx) or a create is refused with a 4xx,
the client reads the broadcast back (``GET /broadcasts/{id}``). Found, it was delivered: the answer
is ``Reported(outcome="confirmed")`` and nothing is sent again. The broadcast's delivery status
(``status``, ``summary``, ``errors`` of the spec's status object) is kept from whichever answer
carries it (``Reported.vendor_status``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from config.errors import PermanentDeliveryError
from config.settings import Settings
from workers.delivery import Reported
from workers.destinations.http import ApiResponse, call_api

__all__ = ["MagicBellClient", "broadcast_status"]

_ERRORS_KEPT = 5  # of a broadcast's per-recipient errors, kept on the action record
# Refusals that say nothing about the broadcast itself: not worth a read-back.
_NOT_ABOUT_THE_BROADCAST = frozenset({401, 403, 404, 405})


def broadcast_status(body: object) -> dict[str, Any] | None:
    """The spec's broadcast ``status`` object (``status``, ``summary.total``/``failures``, ``errors``)
    of an answer, with a one-line ``text`` such as ``processed, 2 of 3 recipients failed``; ``None``
    when the answer has none."""
    if not isinstance(body, dict) or not isinstance(body.get("status"), dict):
        return None
    status = body["status"]
    state = status.get("status")
    summary = status.get("summary") if isinstance(status.get("summary"), dict) else {}
    total, failures = summary.get("total"), summary.get("failures")
    errors = status.get("errors") if isinstance(status.get("errors"), list) else []
    messages = [str(error.get("message", "")) if isinstance(error, dict) else str(error) for error in errors]
    text = str(state or "unknown")
    if isinstance(total, int) and isinstance(failures, int):
        text += f", {failures} of {total} recipients failed" if failures else f", {total} recipients"
    return {
        "status": state,
        "total": total,
        "failures": failures,
        "errors": messages[:_ERRORS_KEPT],
        "text": text,
    }


def _same_event(found: dict[str, Any], sent: dict[str, object]) -> bool:
    """Whether a broadcast read back is the one we sent (same ``magbridge_event_id`` when both say)."""
    mine, theirs = sent.get("custom_attributes"), found.get("custom_attributes")
    if not isinstance(mine, dict) or not isinstance(theirs, dict):
        return True
    name = "magbridge_event_id"
    return name not in mine or name not in theirs or mine[name] == theirs[name]


def _reported(response: ApiResponse, outcome: str = "delivered") -> Reported:
    """An answer carrying a broadcast, with the broadcast's delivery status read from it."""
    return Reported(
        status=response.status,
        body=response.body,
        text=response.text,
        headers=response.headers,
        outcome=outcome,
        vendor_status=broadcast_status(response.body),
    )


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

    async def create_broadcast(
        self, broadcast: dict[str, object], *, idempotency_key: str, read_back: bool = False
    ) -> ApiResponse:
        """Create a broadcast, unless ``read_back`` finds it created already; a 4xx to the create is
        checked by reading the broadcast back too (a repeated ``id`` may get 409, 422...)."""
        broadcast_id = str(broadcast.get("id") or "")
        if read_back and broadcast_id:
            found = await self.fetch_broadcast(broadcast_id)
            if found is not None and _same_event(found.body, broadcast):
                return found
        try:
            response = await call_api(
                self._session,
                "POST",
                f"{self._base_url}/broadcasts",
                api=self.api,
                headers=self._headers(idempotency_key),
                json_body=broadcast,
                timeout=self._timeout,
            )
        except PermanentDeliveryError as exc:
            if not broadcast_id or exc.status is None or exc.status in _NOT_ABOUT_THE_BROADCAST:
                raise
            found = await self.fetch_broadcast(broadcast_id)
            if found is None or not _same_event(found.body, broadcast):
                raise
            return found
        return _reported(response)

    async def fetch_broadcast(self, broadcast_id: str) -> Reported | None:
        """``GET /broadcasts/{id}``: the broadcast as ``Reported(outcome="confirmed")``, ``None`` on 404."""
        try:
            response = await call_api(
                self._session,
                "GET",
                f"{self._base_url}/broadcasts/{quote(broadcast_id, safe='')}",
                api=self.api,
                headers=self._headers(),
                timeout=self._timeout,
            )
        except PermanentDeliveryError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(response.body, dict):
            return None
        return _reported(response, outcome="confirmed")

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
