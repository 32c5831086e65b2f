"""MQL text for the one query the bridge makes: the contacts of a database whose field holds a value.

The Magnews reference shows MQL only by example (``select * from contacts where iddatabase=7 limit
2``) and points to a "Query documentation" it does not include, so how a quote is escaped inside a
string literal is not documented (doubled, as in SQL, or a backslash, as in some dialects). The
bridge never escapes, so it cannot guess wrong: a value goes between single quotes only when it holds
no quote, backslash or control character, and any other value is refused with ``ValueError`` naming
what it holds. A Magnify user id as the reference shows it (``user_987654321``) passes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_VALUE_LENGTH", "as_text", "contact_field", "contacts_query", "quote"]

MAX_VALUE_LENGTH = 256
"""Longer values are refused: a lookup value is an id, and it travels in a URL."""
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_UNQUOTABLE = re.compile(r"['\\\x00-\x1f\x7f]")


def quote(value: str) -> str:
    """``value`` as an MQL string literal, or ``ValueError`` saying why it cannot be one safely."""
    if not value:
        raise ValueError("is empty")
    if len(value) > MAX_VALUE_LENGTH:
        raise ValueError(f"is {len(value)} characters long; at most {MAX_VALUE_LENGTH} are looked up")
    found = _UNQUOTABLE.search(value)
    if found is not None:
        raise ValueError(
            f"{value[:40]!r} holds {found.group()!r}, which MQL's documented examples give no way to escape"
        )
    return f"'{value}'"


def contacts_query(database: int, field: str, value: str, *, limit: int = 2) -> str:
    """``select * from contacts where iddatabase=<database> and <field>='<value>' limit <limit>``.

    Two rows are asked for so that a value held by more than one contact is seen, not hidden.
    """
    if not _FIELD.match(field):
        raise ValueError(f"{field[:40]!r} is not a field id")
    return f"select * from contacts where iddatabase={int(database)} and {field}={quote(value)} limit {int(limit)}"


def as_text(value: Any) -> str:
    """A contact value as the API stores it: a string (``None`` is empty, a boolean ``true``/``false``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def contact_field(contact: Mapping[str, Any], name: str) -> str | None:
    """A field of a contact the query selected, as text; ``None`` when it shows none. Fields are under
    ``fields`` (the reference's example), the top level as a fallback; ``status`` is the contact's own
    attribute, beside its fields."""
    fields = contact.get("fields")
    if name != "status" and isinstance(fields, dict) and name in fields:
        value = fields[name]
    elif name in contact:
        value = contact[name]
    else:
        return None
    return None if isinstance(value, dict | list) else as_text(value)
