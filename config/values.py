"""Checks of single setting values that pydantic's types do not make: Redis URLs, listen hosts, credentials.

Each raises ``ValueError`` with a message that says what is expected; ``config.settings`` names the
variable. A message never holds a secret: a Redis URL is shown with its user and password masked,
a credential never.
"""

from __future__ import annotations

import re
import unicodedata
from ipaddress import ip_address
from urllib.parse import parse_qs, urlsplit

from config.sentinel_url import SENTINEL_SCHEME, SENTINEL_URL_FORM, parse_sentinel_url

__all__ = ["REDIS_URL_FORMS", "check_credential", "check_host", "check_redis_url", "mask_url_credentials"]

REDIS_URL_FORMS = (
    f"redis://[:password@]host[:port][/db], rediss://... (TLS), unix:///path/to/redis.sock or {SENTINEL_URL_FORM}"
)
_REDIS_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://)?)[^/@]*@")
_QUERY_PASSWORD = re.compile(r"([?&][A-Za-z_]*password=)[^&#]*", re.IGNORECASE)
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")  # "_": container service names


def mask_url_credentials(url: str) -> str:
    """``url`` with whatever precedes ``@`` in its authority (user, password) replaced by ``***``, and
    the value of any ``...password=`` parameter (``sentinel_password``) too."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO.sub(r"\1***@", url, count=1))


def check_redis_url(url: str) -> str:
    """A URL that redis-py and arq both read the same way; ``ValueError`` naming what is wrong."""
    url = url.strip()
    shown = repr(mask_url_credentials(url)[:80])
    if "://" not in url:
        raise ValueError(f"{shown} is not a URL (no scheme): expected {REDIS_URL_FORMS}")
    parts = urlsplit(url)
    if parts.scheme not in _REDIS_SCHEMES:
        raise ValueError(f"{shown}: scheme {parts.scheme!r} is not supported: expected {REDIS_URL_FORMS}")
    if parts.scheme == SENTINEL_SCHEME:
        parse_sentinel_url(url, shown)
        return url
    query = parse_qs(parts.query)
    if "db" in query and not (len(query["db"]) == 1 and query["db"][0].isdigit()):
        raise ValueError(f"{shown}: ?db= must be one database number")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"{shown} names no socket: expected unix:///path/to/redis.sock")
        return url
    if not parts.hostname:
        raise ValueError(f"{shown} names no host: expected {REDIS_URL_FORMS}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown}: the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"{shown}: the port must be a number from 1 to 65535")
    database = parts.path.removeprefix("/")
    if database and not database.isdigit():
        raise ValueError(f"{shown}: the path must be a database number such as /0, got /{database[:20]}")
    return url


def check_host(host: str) -> str:
    """An IP address or a DNS name to listen on."""
    text = host.strip()
    try:
        ip_address(text)
    except ValueError:
        labels = text.removesuffix(".").split(".")
        if not text or len(text) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
            raise ValueError(
                f"{host[:60]!r} is not an IP address or host name: expected e.g. 0.0.0.0, :: or localhost"
            ) from None
    return text


def check_credential(name: str, value: str, *, bearer: bool) -> None:
    """A token, secret or client id as it must be sent: not blank, no control characters (a line break
    copied from a file), no surrounding spaces; a ``bearer`` token has no space at all (RFC 6750)."""
    if not value.strip():
        raise ValueError(f"{name} is empty: unset it, or give it a value")
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError(f"{name} contains a control character (a line break copied from a file?)")
    if value != value.strip():
        raise ValueError(f"{name} begins or ends with a space")
    if bearer and any(char.isspace() for char in value):
        raise ValueError(f"{name} contains a space: a token has none")
