"""The one exception hierarchy of magbridge.

    MagbridgeError
    ├── ConfigError              settings or rules are invalid; the process stops at start
    ├── RequestRejected          an inbound HTTP request is refused (becomes a problem+json 4xx)
    ├── StoreUnavailable         Redis does not answer (becomes a 503)
    │   └── ReplicasUnconfirmed  stored on the primary, but too few replicas confirmed it in time (503)
    ├── DeliveryError            a remote API call did not succeed
    │   ├── TransientDeliveryError   worth retrying: connection error, timeout, 408, 429, 5xx
    │   │   ├── MagnewsAuthError     no Magnews access token: the token endpoint refused or did not answer
    │   │   └── MergeOutcomeUnknown  a Magnews merge answered 2xx without an outcome: read the contact back
    │   └── PermanentDeliveryError   not worth retrying: other 4xx, Magnews ``ok: false``, bad rendering
    │       └── CredentialsRefused   401 or 403: the destination refused our credentials (its gate pauses it)
    ├── DeliveryDeferred         not sent at all: rate limit, concurrency cap or open circuit; not a failure
    │   └── DestinationPaused    sent and refused with 401/403: the destination is paused, the action waits
    ├── ActionSkipped            not sent, and need not be: a final outcome that is neither delivered nor dead
    │   ├── ContactUnmatched     no Magnews contact matches (the rule says ``unmatched = "record"``)
    │   └── MergeSuperseded      a newer merge for the same contact and fields was admitted
    └── MagnifyError             reading Magnify failed; the poll logs it and tries again next cycle
        ├── MagnifyAuthError         the token endpoint refused the client credentials or did not answer
        ├── MagnifyApiError          the Partner API answered an error: its documented body, typed
        └── InvalidMotionId          a motion id that does not match the documented UUID pattern

Third-party errors are wrapped at the boundary with ``raise X(...) from exc``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActionSkipped",
    "ConfigError",
    "ContactUnmatched",
    "CredentialsRefused",
    "DeliveryDeferred",
    "DeliveryError",
    "DestinationPaused",
    "InvalidMotionId",
    "MagbridgeError",
    "MagnewsAuthError",
    "MagnifyApiError",
    "MagnifyAuthError",
    "MagnifyError",
    "MergeOutcomeUnknown",
    "MergeSuperseded",
    "PermanentDeliveryError",
    "ReplicasUnconfirmed",
    "RequestRejected",
    "StoreUnavailable",
    "TransientDeliveryError",
]


class MagbridgeError(Exception):
    """Root of every error magbridge raises on purpose."""


class ConfigError(MagbridgeError):
    """Settings or rules that cannot be used; the message names the file, rule and field."""


class RequestRejected(MagbridgeError):
    """An inbound request refused with ``status``; rendered as an RFC 9457 problem document.

    ``title`` is the refusal's short name ("Invalid JSON"), for the logs and the ``rejected`` metric's
    reason; the document's own ``title`` is the status's phrase (``bridge.web.problems``)."""

    def __init__(self, status: int, title: str, detail: str, *, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []


class StoreUnavailable(MagbridgeError):
    """Redis did not answer; nothing was stored."""


class ReplicasUnconfirmed(StoreUnavailable):
    """The primary stored the events, but fewer replicas than required confirmed them in time: not yet
    safe from the loss of the primary, so not acknowledged. A resend is recognised as a duplicate."""

    def __init__(self, message: str, *, required: int, confirmed: int, timeout_ms: int):
        super().__init__(message)
        self.required = required
        self.confirmed = confirmed
        self.timeout_ms = timeout_ms


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


class MagnewsAuthError(TransientDeliveryError):
    """The Magnews token endpoint gave no access token. Transient on purpose: deliveries wait and retry
    (within ``RETRY_MAX_AGE_SECONDS``) while an operator fixes the credentials. Never holds a secret."""


class MergeOutcomeUnknown(TransientDeliveryError):
    """A Magnews merge answered 2xx with neither ``ok`` nor an outcome (or a ``batchmerge`` answer that
    cannot be paired with its contacts): the merge may or may not have been carried out. The sender
    reads the contact back (``workers.destinations.merge_readback``); unconfirmed, it is retried."""


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help; the action goes to the dead letters with the response."""


class CredentialsRefused(PermanentDeliveryError):
    """The destination answered 401 or 403: our token is expired, revoked or lacks a permission.

    Permanent for the one call; a delivery through a gate never dead-letters it: the gate pauses the
    destination and turns it into :class:`DestinationPaused` (``workers.destinations.limits``)."""


class DeliveryDeferred(MagbridgeError):
    """A request was not sent because its destination is saturated or its circuit is open.

    Not an attempt: it does not count toward the retry limit. ``retry_after`` is when to try again.
    """

    def __init__(self, reason: str, *, retry_after: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class DestinationPaused(DeliveryDeferred):
    """The request went out and the destination refused our credentials (401/403); the destination is
    paused. Recorded as an attempt, but not counted as a failure: the action waits, like any deferral,
    until a probe finds the credentials accepted again. ``status`` and ``body`` keep the refusal."""

    def __init__(self, reason: str, *, retry_after: float, status: int | None, body: str | None):
        super().__init__(reason, retry_after=retry_after)
        self.status = status
        self.body = body


class ActionSkipped(MagbridgeError):
    """An action that is final without a request: ``status`` (its action status) and ``note`` say why."""

    status = "skipped"

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


class ContactUnmatched(ActionSkipped):
    """No Magnews contact holds the merge's match value; the rule records it instead of creating one."""

    status = "unmatched"


class MergeSuperseded(ActionSkipped):
    """A merge at least as new, for the same contact and every field this one writes, was admitted
    before it: sending this one would put older values over newer ones."""

    status = "superseded"


class MagnifyError(MagbridgeError):
    """Reading Magnify failed; the poll cycle logs it, records it, and tries again next cycle."""


class MagnifyAuthError(MagnifyError):
    """The token endpoint refused the client (``transient`` False: wrong credentials or scope) or did
    not answer usefully (``transient`` True: connection error, timeout, 429, 5xx). Never holds a secret."""

    def __init__(
        self, message: str, *, status: int | None = None, transient: bool = False, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


class MagnifyApiError(MagnifyError):
    """The Partner API answered an error, or nothing (``status`` None: connection error, timeout).

    The documented error body is kept field by field: ``type``, ``message``, ``detail``, ``status``,
    ``instance`` and ``validation_errors`` (the body's ``validationErrors``, on 400 only).
    """

    def __init__(
        self,
        summary: str,
        *,
        status: int | None,
        type: str = "",
        message: str = "",
        detail: str = "",
        instance: str = "",
        validation_errors: list[str] | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(summary)
        self.status = status
        self.type = type
        self.message = message
        self.detail = detail
        self.instance = instance
        self.validation_errors = validation_errors or []
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying: no answer, 408, 429 or 5xx."""
        return self.status is None or self.status in (408, 429) or self.status >= 500


class InvalidMotionId(MagnifyError, ValueError):
    """A motion id that is neither a UUID in the documented pattern nor ``motion_`` and one."""
