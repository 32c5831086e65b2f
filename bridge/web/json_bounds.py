"""Decode a request body as JSON within bounds, or refuse it with the field and the rule broken.

``json.loads`` alone has no depth limit (a body of nested brackets ends in ``RecursionError``), reads
``NaN``, ``Infinity`` and ``1e999`` as numbers that are not JSON when written back, keeps the last of
duplicate keys, and lets lone UTF-16 surrogates (``"\\ud800"``) through, which Redis and the logs
cannot encode. ``decode_json`` turns each of these into a ``RequestRejected``:

    400  not UTF-8, not JSON, nested deeper than ``max_depth``, a duplicate key, a number that is not
         finite or longer than Python reads (4300 digits), a lone surrogate in a string or key
    413  a string or key longer than ``max_string_length``, more than ``max_fields`` values in all

Every refusal names the place as a JSONPath (``$[2].data.name``) in ``errors[].field``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from config.errors import RequestRejected
from config.settings import Settings

__all__ = ["JsonBounds", "decode_json"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


@dataclass(frozen=True, slots=True)
class JsonBounds:
    """The limits a decoded body must keep; ``max_fields`` counts every object member and array item."""

    max_depth: int = 32
    max_string_length: int = 65536
    max_fields: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> JsonBounds:
        return cls(
            max_depth=settings.webhook_max_depth,
            max_string_length=settings.webhook_max_string_length,
            max_fields=settings.webhook_max_fields,
        )


class _DuplicateKeys(dict[str, Any]):
    """An object that named a key twice; the walk refuses it with its path."""

    duplicate: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    marked = _DuplicateKeys(result)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs)


def _refuse(status: int, field: str, message: str) -> RequestRejected:
    title = "Payload too large" if status == 413 else "Invalid JSON"
    return RequestRejected(status, title, f"{field}: {message}", errors=[{"field": field, "message": message}])


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key[:40] + ('...' if len(key) > 40 else ''))}]"


def _check_string(text: str, path: str, bounds: JsonBounds, what: str) -> None:
    if len(text) > bounds.max_string_length:
        raise _refuse(413, path, f"{what} longer than {bounds.max_string_length} characters")
    if _SURROGATE.search(text):
        raise _refuse(400, path, f"{what} holds a lone UTF-16 surrogate, which is not Unicode text")


def _check_container(node: dict[str, Any] | list[Any], path: str, depth: int, bounds: JsonBounds) -> None:
    if depth > bounds.max_depth:
        raise _refuse(400, path, f"nested deeper than {bounds.max_depth} levels")
    if isinstance(node, _DuplicateKeys):
        raise _refuse(400, path, f"the key {node.duplicate[:40]!r} appears twice in one object")


def _within_bounds(value: Any, bounds: JsonBounds) -> bool:
    """The checks of ``_walk`` without naming places: most bodies pass, and building a path for every
    value would cost more than the checks themselves."""
    fields = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    longest, surrogate = bounds.max_string_length, _SURROGATE.search
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > bounds.max_depth or isinstance(node, _DuplicateKeys):
                return False
            fields += len(node)
            for key, child in node.items():
                if len(key) > longest or surrogate(key):
                    return False
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            if depth > bounds.max_depth:
                return False
            fields += len(node)
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str):
            if len(node) > longest or surrogate(node):
                return False
        elif isinstance(node, float) and not math.isfinite(node):
            return False
        if fields > bounds.max_fields:
            return False
    return True


def _walk(value: Any, bounds: JsonBounds) -> None:
    """Check every value without recursion: depth, strings, keys, numbers and the count of values;
    raise naming the first place that breaks a rule."""
    fields = 0
    stack: list[tuple[Any, str, int]] = [(value, "$", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict):
            _check_container(node, path, depth, bounds)
            fields += len(node)
            for key, child in node.items():
                child_path = _child_path(path, key)
                _check_string(key, child_path, bounds, "the key is")
                stack.append((child, child_path, depth + 1))
        elif isinstance(node, list):
            _check_container(node, path, depth, bounds)
            fields += len(node)
            stack.extend((child, _child_path(path, index), depth + 1) for index, child in enumerate(node))
        elif isinstance(node, str):
            _check_string(node, path, bounds, "the string is")
        elif isinstance(node, float) and not math.isfinite(node):
            raise _refuse(400, path, f"{node} is not a finite number (JSON has no NaN or Infinity)")
        if fields > bounds.max_fields:
            raise _refuse(413, "$", f"more than {bounds.max_fields} values in one body")


def decode_json(raw: bytes, bounds: JsonBounds) -> Any:
    """The decoded body, or ``RequestRejected`` naming the field and the rule it breaks."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestRejected(
            400, "Invalid JSON", "the body is not UTF-8 text", errors=[{"field": "$", "message": str(exc)[:200]}]
        ) from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise RequestRejected(
            400, "Invalid JSON", f"the body is {message}", errors=[{"field": "$", "message": message}]
        ) from None
    except RecursionError:
        raise _refuse(400, "$", f"nested deeper than {bounds.max_depth} levels") from None
    except ValueError:  # an integer of more digits than int() reads (sys.get_int_max_str_digits)
        raise _refuse(400, "$", "a number has more digits than the receiver reads (4300)") from None
    if not _within_bounds(value, bounds):
        _walk(value, bounds)  # raises, naming the place (both check the same rules)
        raise _refuse(400, "$", "the body breaks a bound")  # only if the two ever disagreed
    return value
