"""Magnews contacts: merge-by-primary-key semantics of ``/v19/contacts/merge`` and ``batchmerge``.

Pure data, no HTTP: a merge returns the documented result object
``{"ok", "pk", "idcontact", "action", "errors", "sendemail", "enterworkflow", "idwebtracking"}``.
Data problems are not exceptions: they come back as ``ok: false`` with ``errors: [{"type", "field"}]``,
which the API answers with HTTP 200.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STATUSES", "Contact", "ContactStore", "as_field_value"]

STATUSES = frozenset({"subscribed", "unsubscribed", "unconfirmed", "suspended"})
DEFAULT_STATUS = "subscribed"


@dataclass
class Contact:
    """A stored contact; every field value is a string, as the API is string-typed."""

    idcontact: int
    iddatabase: int
    status: str
    fields: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The shape of the query contacts example: ``idcontact``, ``iddatabase``, ``status``, ``fields``."""
        return {
            "idcontact": self.idcontact,
            "iddatabase": self.iddatabase,
            "status": self.status,
            "fields": dict(self.fields),
        }


def as_field_value(value: Any) -> str | None:
    """The string the API stores for a JSON value; ``None`` for objects and arrays, which it cannot."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _result(ok: bool, pk: str, idcontact: int, action: str, errors: list[dict[str, str]] | None) -> dict[str, Any]:
    return {
        "ok": ok,
        "pk": pk,
        "idcontact": idcontact,
        "action": action,
        "errors": errors,
        "sendemail": None,
        "enterworkflow": None,
        "idwebtracking": None,
    }


def _failure(pk: str, errors: list[dict[str, str]]) -> dict[str, Any]:
    return _result(False, pk, 0, "nothing", errors)


class ContactStore:
    """Contacts per ``(iddatabase, primary key value)``; ``databases`` maps each database to its pk field."""

    def __init__(self, databases: Mapping[int, str]) -> None:
        self.databases = dict(databases)
        self._contacts: dict[tuple[int, str], Contact] = {}
        self._by_id: dict[int, Contact] = {}
        self._next_id = 1

    def reset(self) -> None:
        """Forget every contact."""
        self._contacts.clear()
        self._by_id.clear()
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._contacts)

    def get(self, idcontact: int) -> Contact | None:
        """The contact with this id, if any."""
        return self._by_id.get(idcontact)

    def in_database(self, iddatabase: int | None) -> list[Contact]:
        """Contacts of one database (all when ``None``), in insertion order."""
        return [c for c in self._contacts.values() if iddatabase is None or c.iddatabase == iddatabase]

    def _check(self, iddatabase: int, values: Mapping[str, Any]) -> tuple[str, dict[str, str], list[dict[str, str]]]:
        """``(pk, string values, errors)`` for a merge request."""
        pk_field = self.databases.get(iddatabase)
        if pk_field is None:
            return "", {}, [{"type": "database_not_found", "field": "iddatabase"}]
        errors: list[dict[str, str]] = []
        strings: dict[str, str] = {}
        for name, value in values.items():
            text = as_field_value(value)
            if text is None:
                errors.append({"type": "invalid_value", "field": name})
            else:
                strings[name] = text
        pk = strings.get(pk_field, "")
        if not pk.strip():
            errors.append({"type": "missing_primary_key", "field": pk_field})
        if "status" in strings and strings["status"] not in STATUSES:
            errors.append({"type": "invalid_value", "field": "status"})
        return pk, strings, errors

    def merge(self, iddatabase: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Insert or update the contact whose primary key is in ``values``; the documented result object."""
        pk, strings, errors = self._check(iddatabase, values)
        if errors:
            return _failure(pk, errors)
        status = strings.pop("status", None)
        existing = self._contacts.get((iddatabase, pk))
        if existing is None:
            contact = Contact(self._next_id, iddatabase, status or DEFAULT_STATUS, strings)
            self._next_id += 1
            self._contacts[(iddatabase, pk)] = contact
            self._by_id[contact.idcontact] = contact
            return _result(True, pk, contact.idcontact, "insert", None)
        merged = {**existing.fields, **strings}
        new_status = status or existing.status
        # The spec also lists reactivate/restore/suspend/...; their triggers are undocumented, so any
        # change, a status change included, is reported as "update".
        action = "nothing" if merged == existing.fields and new_status == existing.status else "update"
        existing.fields = merged
        existing.status = new_status
        return _result(True, pk, existing.idcontact, action, None)
