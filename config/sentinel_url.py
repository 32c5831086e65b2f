"""``redis+sentinel://`` URLs: a Redis Sentinel set and the master it watches, as one ``REDIS_URL``.

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db][?sentinel_password=...]

Every host is a Sentinel (port 26379 unless given); ``master`` is the name the Sentinels monitor
(``sentinel monitor <master> ...``). The user and password are the master's (and its replicas'), as
in a ``redis://`` URL; ``sentinel_password`` is for Sentinels that require one (``requirepass`` in
sentinel.conf). Both are percent-decoded. One URL keeps every command that takes ``REDIS_URL``
(``web``, ``worker``, ``run``, ``check``, ``replay``, ``demo --redis-url``) able to follow a failover
without a setting of its own; ``bridge.store.connections`` opens it with redis-py's ``Sentinel``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["SENTINEL_SCHEME", "SENTINEL_URL_FORM", "SentinelUrl", "is_sentinel_url", "parse_sentinel_url"]

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_URL_FORM = "redis+sentinel://[:password@]host[:port][,host[:port]...]/master[/db]"
_DEFAULT_PORT = 26379
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))(?::(?P<port>[^:]*))?$")
_MASTER = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_QUERY = ("sentinel_password",)


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """Where the Sentinels are, the master they name, and the credentials of each."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    database: int
    username: str | None
    password: str | None
    sentinel_password: str | None

    @property
    def location(self) -> str:
        """``master/db via sentinels host:port,...``: for logs and messages, never a password."""
        hosts = ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.sentinels)
        return f"{self.master}/{self.database} via sentinels {hosts}"


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str, shown: str) -> SentinelUrl:
    """``url`` read; ``ValueError`` naming what is wrong (``shown``: the URL as a message may show it)."""
    parts = urlsplit(url.strip())
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    if not hostlist:
        raise ValueError(f"{shown} names no Sentinel: expected {SENTINEL_URL_FORM}")
    sentinels = tuple(_sentinel(host, shown) for host in hostlist.split(","))
    path = [segment for segment in parts.path.split("/") if segment]
    if not path:
        raise ValueError(f"{shown} names no master: expected {SENTINEL_URL_FORM}")
    if len(path) > 2 or not _MASTER.match(path[0]) or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{shown}: the path must be /master or /master/db (a database number), as in /mymaster/0")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY))
    if unknown:
        raise ValueError(f"{shown}: unknown parameter {unknown[0]!r} (only sentinel_password)")
    if any(len(values) != 1 or not values[0] for values in query.values()):
        raise ValueError(f"{shown}: sentinel_password must be given once, not empty")
    return SentinelUrl(
        sentinels=sentinels,
        master=path[0],
        database=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=query["sentinel_password"][0] if query else None,
    )


def _sentinel(text: str, shown: str) -> tuple[str, int]:
    match = _HOST.match(text)
    if match is None:
        raise ValueError(f"{shown}: {text[:60]!r} is not a Sentinel host[:port]: expected {SENTINEL_URL_FORM}")
    port = match["port"]
    if port is not None and not (port.isdigit() and 0 < int(port) <= 65535):
        raise ValueError(f"{shown}: the port of Sentinel {text[:60]!r} must be a number from 1 to 65535")
    return match["v6"] or match["name"], int(port) if port else _DEFAULT_PORT
