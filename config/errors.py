"""The one exception hierarchy of magbridge.

    MagbridgeError
    ├── ConfigError              settings or rules are invalid; the process stops at start
    ├── RequestRejected          an inbound HTTP request is refused (becomes a problem+json 4xx)
    ├── StoreUnavailable         Redis does not answer (becomes a 503)
    ├── DeliveryError            a remote API call did not succeed
    │   ├── TransientDeliveryError   worth retrying: connection error, timeout, 408, 429, 5xx
    │   └── PermanentDeliveryError   not worth retrying: other 4xx, Magnews ``ok: false``, bad rendering
    └── DeliveryDeferred         not sent at all: rate limit, concurrency cap or open circuit; not a failure

Third-party errors are wrapped at the boundary with ``raise X(...) from exc``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DeliveryDeferred",
    "DeliveryError",
    "MagbridgeError",
    "PermanentDeliveryError",
    "RequestRejected",
    "StoreUnavailable",
    "TransientDeliveryError",
]


class MagbridgeError(Exception):
    """Root of every error magbridge raises on purpose."""


class ConfigError(MagbridgeError):
    """Settings or rules that cannot be used; the message names the file, rule and field."""


class RequestRejected(MagbridgeError):
    """An inbound request refused with ``status``; rendered as an RFC 9457 problem document."""

    def __init__(self, status: int, title: str, detail: str, *, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []


class StoreUnavailable(MagbridgeError):
    """Redis did not answer; nothing was stored."""


class DeliveryError(MagbridgeError):
    """A call to a remote API failed. ``status`` and ``body`` keep the last response, if any."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class TransientDeliveryError(DeliveryError):
    """Worth retrying; ``retry_after`` is the server's ``Retry-After`` in seconds, if it sent one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help; the action goes to the dead letters with the response."""


class DeliveryDeferred(MagbridgeError):
    """A request was not sent because its destination is saturated or its circuit is open.

    Not an attempt: it does not count toward the retry limit. ``retry_after`` is when to try again.
    """

    def __init__(self, reason: str, *, retry_after: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
