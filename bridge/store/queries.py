"""Selecting stored events: filters, instants, opaque cursors, and the filtered walk over an index.

Shared by the admin API (``GET /admin/events``, ``GET /admin/dead-letters``) and replays (a time
range, or the dead letters, narrowed by source and type). Times are the receipt time in the index.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.events import format_time
from bridge.store.reads import EventReader
from bridge.store.records import EVENT_STATUSES, StoredEvent

__all__ = [
    "EventQuery",
    "InvalidQuery",
    "Page",
    "decode_cursor",
    "encode_cursor",
    "find_events",
    "format_ms",
    "parse_instant",
]

_AGO = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CHUNK = 200


class InvalidQuery(ValueError):
    """A filter value that cannot be used; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


def parse_instant(value: str | int, parameter: str) -> int:
    """Epoch milliseconds from ISO 8601, epoch milliseconds, or a span ago such as ``15m``, ``2h``, ``7d``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidQuery(parameter, "epoch milliseconds must not be negative")
        return value
    if not isinstance(value, str) or not value.strip():
        raise InvalidQuery(parameter, "an ISO 8601 date-time, epoch milliseconds or a span ago such as 2h")
    text = value.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    ago = _AGO.match(text)
    if ago:
        return int((time.time() - int(ago.group(1)) * _UNIT_SECONDS[ago.group(2)]) * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidQuery(
            parameter, f"{text[:40]!r} is not an ISO 8601 date-time, epoch milliseconds or a span ago such as 2h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def format_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ``bridge.events.format_time`` shows every time: ISO 8601, UTC, milliseconds, ``Z``."""
    if ms is None:
        return None
    return format_time(datetime.fromtimestamp(ms / 1000, tz=UTC))


def encode_cursor(position: tuple[int, str]) -> str:
    raw = json.dumps([position[0], position[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, member = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidQuery("cursor", "not a cursor this service gave out") from None
    if not isinstance(score, int) or not isinstance(member, str):
        raise InvalidQuery("cursor", "not a cursor this service gave out")
    return score, member


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events: by source, type (exact or a glob such as ``*/msg/bounce``), status, receipt time."""

    source: str | None = None
    type: str | None = None
    status: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in EVENT_STATUSES:
            raise InvalidQuery("status", f"{self.status[:40]!r} is not one of {', '.join(EVENT_STATUSES)}")
        if self.since_ms is not None and self.until_ms is not None and self.since_ms > self.until_ms:
            raise InvalidQuery("since", "is later than until")

    def matches(self, event: StoredEvent) -> bool:
        if self.source is not None and event.source != self.source:
            return False
        if self.status is not None and event.status != self.status:
            return False
        return self.type is None or event.type == self.type or fnmatch.fnmatchcase(event.type, self.type)


@dataclass(slots=True)
class Page:
    """Matching events, newest first; ``cursor`` continues after them (``None``: nothing more)."""

    events: list[StoredEvent]
    cursor: tuple[int, str] | None
    scanned: int


async def find_events(
    reader: EventReader,
    query: EventQuery,
    *,
    index: str = "events",
    limit: int,
    after: tuple[int, str] | None = None,
    budget: int = 5000,
) -> Page:
    """Walk ``index`` newest first and keep what ``query`` matches, up to ``limit`` events.

    At most ``budget`` index entries are read per call; a page can then hold fewer than ``limit``
    events and still carry a cursor. Entries whose event expired are skipped.
    """
    found: list[StoredEvent] = []
    scanned = 0
    position = after
    while scanned < budget:
        count = min(_CHUNK, budget - scanned)
        entries = await reader.index_page(
            index, max_ms=query.until_ms, min_ms=query.since_ms, after=position, count=count
        )
        headers = await reader.headers([event_id for event_id, _ in entries])
        for (event_id, score), event in zip(entries, headers, strict=True):
            position = (score, event_id)
            scanned += 1
            if event is not None and query.matches(event):
                found.append(event)
                if len(found) == limit:
                    return Page(found, position, scanned)
        if len(entries) < count:
            return Page(found, None, scanned)
    return Page(found, position, scanned)
