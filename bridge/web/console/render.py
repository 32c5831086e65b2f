"""Pages: the Jinja2 templates (``templates/``), their filters, and the HTML response of one page.

Templates autoescape everything and hold no script and no ``style`` attribute, so the content
security policy can forbid inline code altogether (``bridge.web.console.guard``). Times are shown in
UTC, as the logs and the admin API give them. Payloads and responses are shown through
``bridge.logs.redact_document``: values under secret-looking keys and tokens in strings are hidden.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from bridge.logs import redact_document
from bridge.web.console.assets import Assets

__all__ = ["Pages", "ago", "when"]

_EXCERPT = 2000


def when(value: int | str | None) -> str:
    """Epoch milliseconds or an ISO 8601 time as ``2025-11-14 13:00:00.123 UTC``; "-" for none."""
    if value is None or value == "":
        return "-"
    if isinstance(value, int):
        moment = datetime.fromtimestamp(value / 1000, UTC)
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return value
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def _ms(value: int | str | None) -> int | None:
    if isinstance(value, int):
        return value
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def ago(value: int | str | None, now_ms: int | None = None) -> str:
    """How long ago (or, for a future time, in how long): ``42 s ago``, ``in 3 min``."""
    ms = _ms(value)
    if ms is None:
        return "-"
    delta = ((now_ms if now_ms is not None else int(time.time() * 1000)) - ms) / 1000
    text = _span(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _pretty(value: Any) -> str:
    return json.dumps(redact_document(value), indent=2, ensure_ascii=False, sort_keys=True)


def _excerpt(value: Any, limit: int = _EXCERPT) -> str:
    """A response body, redacted and cut to ``limit`` characters."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            shown = str(redact_document(value))
        else:
            shown = _pretty(decoded) if isinstance(decoded, dict | list) else str(redact_document(value))
    else:
        shown = _pretty(value)
    return shown if len(shown) <= limit else shown[:limit] + f"\n… ({len(shown) - limit:,} more characters)"


def _path(value: str) -> str:
    """An event id as one path segment."""
    return quote(value, safe="")


def _query(values: dict[str, Any]) -> str:
    """A query string of the non-empty ``values`` ("" when none)."""
    kept = {name: value for name, value in values.items() if value not in (None, "")}
    return "?" + urlencode(kept, doseq=True) if kept else ""


class Pages:
    """The template environment; ``render`` answers one page."""

    def __init__(self, assets: Assets):
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("bridge.web.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(when=when, ago=ago, pretty=_pretty, excerpt=_excerpt, path=_path, query=_query)
        self._env.globals.update(asset=assets.url, span=_span)

    def render(self, template: str, *, status: int = 200, **context: Any) -> web.Response:
        context.setdefault("now_ms", int(time.time() * 1000))
        context.setdefault("session", None)
        context.setdefault("nav", "")
        html = self._env.get_template(template).render(**context)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
