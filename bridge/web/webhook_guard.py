"""Who may post webhooks: the source-network allow-list and the shared secret, checked before the body.

``WebhookGuard.check`` runs first in the webhook handler and raises ``RequestRejected``:

    403  ``MAGBRIDGE_WEBHOOK_ALLOWED_NETWORKS`` is set and the client address is outside it (or cannot
         be told: a malformed ``X-Forwarded-For`` from a trusted proxy)
    401  a secret is set and the request carries none of the valid ones

The client address is the TCP peer, unless the peer is one of ``MAGBRIDGE_TRUSTED_PROXIES``: then
``X-Forwarded-For`` is read from the right, skipping trusted proxies, and the first address that is
not one is the client. Entries left of it were written by the client and prove nothing.

The secret travels as ``?token=`` (the form Magnews can be registered with) or ``X-Webhook-Token``.
Both the current and, during a rotation, the previous secret are valid. Without a secret the guard
refuses to be built (``ConfigError``: ``web`` and ``run`` do not start) unless
``MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS`` says that an open receiver is meant. Each comparison is of SHA-256
digests with ``hmac.compare_digest``: the time taken tells neither the secret's content nor its length,
and every valid secret is compared every time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from aiohttp import web

from config.errors import ConfigError, RequestRejected
from config.settings import Settings

__all__ = ["NO_SECRET", "WEBHOOK_GUARD", "WebhookGuard", "client_address"]

_TOKEN_PARAMETER = "token"
_TOKEN_HEADER = "X-Webhook-Token"

NO_SECRET = (
    "MAGBRIDGE_WEBHOOK_SECRET is not set, so anyone who reaches the receiver could post webhooks: set it "
    "(docs/security.md), or set MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS=true to run without one on purpose"
)

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def _digest(value: str) -> bytes:
    # surrogatepass: a decoded query string may hold lone surrogates; they must compare, not raise.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def _parse_address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443" as some proxies write it
        text = text[1 : text.index("]")]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> Address | None:
    """The client's address: the peer, or what trusted proxies say in ``X-Forwarded-For``; None if unknown."""
    address = _parse_address(peer) if peer else None
    if address is None or not _within(address, trusted):
        return address
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _parse_address(hop)
        if address is None or not _within(address, trusted):
            return address
    return address  # every hop a trusted proxy: the leftmost one is the client


@dataclass(frozen=True, slots=True)
class WebhookGuard:
    """The webhook receiver's access rules, built once from the settings."""

    secret_digests: tuple[bytes, ...]
    allowed_networks: tuple[Network, ...]
    trusted_proxies: tuple[Network, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookGuard:
        """The guard for ``settings``; ``ConfigError`` when it would let anyone in unasked."""
        if settings.webhook_secret is None and not settings.allow_unauthenticated_webhooks:
            raise ConfigError(NO_SECRET)
        secrets = (settings.webhook_secret, settings.webhook_secret_previous)
        return cls(
            secret_digests=tuple(_digest(secret.get_secret_value()) for secret in secrets if secret is not None),
            allowed_networks=tuple(settings.webhook_allowed_networks),
            trusted_proxies=tuple(settings.trusted_proxies),
        )

    def check(self, request: web.Request) -> None:
        """Raise ``RequestRejected`` (403 or 401) unless the request may post webhooks."""
        if self.allowed_networks:
            self._check_network(request)
        if self.secret_digests:
            self._check_token(request)

    def _check_network(self, request: web.Request) -> None:
        forwarded = request.headers.getall("X-Forwarded-For", [])
        address = client_address(request.remote, forwarded, self.trusted_proxies)
        if address is None:
            raise RequestRejected(
                403,
                "Forbidden",
                "the client address cannot be determined",
                errors=[{"field": "X-Forwarded-For", "message": "from a trusted proxy, must list IP addresses"}],
            )
        if not _within(address, self.allowed_networks):
            raise RequestRejected(
                403,
                "Forbidden",
                f"{address} is not in MAGBRIDGE_WEBHOOK_ALLOWED_NETWORKS",
                errors=[{"field": "client address", "message": "outside the allowed networks"}],
            )

    def _check_token(self, request: web.Request) -> None:
        # One value is compared, the query's or else the header's: a request cannot try many guesses.
        given = request.query.get(_TOKEN_PARAMETER) or request.headers.get(_TOKEN_HEADER) or ""
        if not given:
            raise RequestRejected(
                401,
                "Unauthorized",
                "the webhook token is missing",
                errors=[{"field": "token", "message": f"required as ?{_TOKEN_PARAMETER}= or {_TOKEN_HEADER}"}],
            )
        digest = _digest(given)
        matched = False
        for valid in self.secret_digests:  # no early exit: every secret is compared every time
            matched |= hmac.compare_digest(digest, valid)
        if not matched:
            raise RequestRejected(
                401,
                "Unauthorized",
                "the webhook token is wrong",
                errors=[{"field": "token", "message": "does not match MAGBRIDGE_WEBHOOK_SECRET"}],
            )


# The guard of the running app, built once from its settings in ``create_app``.
WEBHOOK_GUARD = web.AppKey("webhook_guard", WebhookGuard)
