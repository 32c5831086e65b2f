"""structlog set-up: JSON (or console) lines, context variables first, secrets never rendered.

Every line, structlog's and the standard library's (aiohttp, arq), carries ``timestamp``, ``level``,
``logger`` (the name given to ``get_logger``, or the stdlib logger's) and ``event``, and an
exception as text under ``exception`` (a traceback object rendered as JSON would be only its
``repr``). Tracebacks are redacted like every other value.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from typing import Any, TextIO

import orjson
import structlog

__all__ = ["configure_logging", "redact", "redact_document"]

# Query-string tokens (the webhook secret travels as ?token=), bearer values, and token headers
# written out as "X-Webhook-Token: value" or {"X-Webhook-Token": "value"}.
_SECRET_PATTERNS = (
    re.compile(r"(?i)([?&](?:token|access_token|client_secret|secret)=)[^&\s\"']+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]+"),
    re.compile(r"(?i)(x-webhook-token[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}]+"),
)
# Values logged under these keys (at any depth of a logged dict) are never shown.
_SECRET_KEY = re.compile(r"(?i)^(?:.*[_-])?(?:token|secret|password|authorization|api[_-]?key)$")


def redact(text: str) -> str:
    """Hide token values in a URL, header or message."""
    # Every pattern needs one of these words, which few log values hold (this runs for every value
    # of every log line, timestamps and ids included).
    lowered = text.lower()
    if "token" not in lowered and "secret" not in lowered and "bearer" not in lowered:
        return text
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))  # log keys are a small set: decided once each


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, str):
        return "***" if value and _is_secret_key(key) else redact(value)
    if isinstance(value, dict):
        return {name: _redact_value(str(name), item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, item) for item in value]
    return value


def redact_document(value: Any) -> Any:
    """A decoded JSON document as the log lines would show it: values under secret-looking keys
    (``token``, ``*_secret``, ``password``, ...) as ``***``, token values in strings hidden. The
    operator console shows payloads and responses through this."""
    return _redact_value("", value)


def _redact_values(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in event_dict.items():
        if key != "event":  # the event name is a fixed message, never a secret's holder by key
            event_dict[key] = _redact_value(key, value)
        elif isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


class _NamedPrintLogger(structlog.PrintLogger):
    """A ``PrintLogger`` that knows the name it was asked for, for ``add_logger_name``."""

    def __init__(self, file: TextIO, name: str):
        super().__init__(file)
        self.name = name


def _logger_factory(file: TextIO) -> Any:
    def factory(*args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(file, str(args[0]) if args else "magbridge")

    return factory


def _dumps(value: Any, **_: Any) -> str:
    # orjson renders a log line several times faster than json; a line per event adds up.
    return orjson.dumps(value, default=repr).decode()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog (and the stdlib loggers of aiohttp and arq) to stdout in one format."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # before redaction: a traceback may quote a URL's token
        _redact_values,
    ]
    out = sys.stdout  # looked up now, so that a test's capture of stdout takes the lines
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_logger_factory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats every request at info level; our own lines say what matters.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # arq logs two lines per job at info; ours say more (event, action, outcome), once.
    logging.getLogger("arq.worker").setLevel(max(logging.WARNING, root.level))
