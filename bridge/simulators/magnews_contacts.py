"""Magnews contacts: merge-by-primary-key semantics of ``/v19/contacts/merge`` and ``batchmerge``.

Pure data, no HTTP: a merge returns the documented result object
``{"ok", "pk", "idcontact", "action", "errors", "sendemail", "enterworkflow", "idwebtracking"}``.
Data problems are not exceptions: they come back as ``ok: false`` with ``errors: [{"type", "field"}]``,
which the API answers with HTTP 200.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STATUSES", "Contact", "ContactStore", "as_field_value", "email_database_seed"]

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

    def to_query_json(self, primary_key_field: str) -> dict[str, Any]:
        """As the query contacts example shows a contact: ``fields`` also hold ``idcontact``,
        ``iddatabase`` and ``primarykey`` (the value of the database's primary-key field) as strings."""
        shown = self.to_json()
        shown["fields"] |= {
            "idcontact": str(self.idcontact),
            "iddatabase": str(self.iddatabase),
            "primarykey": self.fields.get(primary_key_field, ""),
        }
        return shown


def email_database_seed(magnify_user_ids: Sequence[str]) -> list[dict[str, str]]:
    """The contacts of a database keyed by e-mail that Magnify metrics are merged into: every other
    Magnify user (the second, fourth, ...) has one that carries its ``magnify_user_id``; the first
    user has one without it (known by e-mail only: not found by the user id); and two readers have
    nothing to do with Magnify."""
    seeded = [
        {"email": f"{user_id.replace('_', '.')}@example.com", "magnify_user_id": user_id, "name": f"Reader {user_id}"}
        for user_id in magnify_user_ids[1::2]
    ]
    unlinked = [{"email": f"{user_id.replace('_', '.')}@example.com"} for user_id in magnify_user_ids[:1]]
    readers = [{"email": f"reader.{number}@example.com", "name": f"Reader {number}"} for number in (1, 2)]
    return [*unlinked, *seeded, *readers]


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
        self.options_seen: list[dict[str, Any]] = []
        self.emails_sent = 0

    def reset(self) -> None:
        """Forget every contact."""
        self._contacts.clear()
        self._by_id.clear()
        self._next_id = 1
        self.options_seen.clear()
        self.emails_sent = 0

    def __len__(self) -> int:
        return len(self._contacts)

    def get(self, idcontact: int) -> Contact | None:
        """The contact with this id, if any."""
        return self._by_id.get(idcontact)

    def in_database(self, iddatabase: int | None) -> list[Contact]:
        """Contacts of one database (all when ``None``), in insertion order."""
        return [c for c in self._contacts.values() if iddatabase is None or c.iddatabase == iddatabase]

    def primary_key_field(self, iddatabase: int) -> str:
        """The field id that keys ``iddatabase`` ("" for a database that does not exist)."""
        return self.databases.get(iddatabase, "")

    def seed(self, iddatabase: int, contacts: Sequence[Mapping[str, str]]) -> None:
        """Store ``contacts`` (field values, subscribed) as if they had always been there: no options seen."""
        for values in contacts:
            self.merge(iddatabase, values)
        self.options_seen.clear()

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

    def merge(
        self, iddatabase: int, values: Mapping[str, Any], options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Insert or update the contact whose primary key is in ``values``; the documented result object.

        ``options`` are the documented merge options this simulator honours (each recorded in
        ``options_seen``): ``denysubscribenewcontact`` (a new contact is not subscribed: stored as
        ``unconfirmed``, the spec naming no status for it), ``denysubscribeunsubscribedcontact`` (an
        unsubscribed contact stays so; without it a merge reactivates it, the ``reactivate`` action),
        ``denyupdatecontact``, and ``sendemail`` with ``sendemailonactions`` (counted in ``emails_sent``).
        """
        options = options or {}
        self.options_seen.append(dict(options))
        pk, strings, errors = self._check(iddatabase, values)
        if errors:
            return _failure(pk, errors)
        status = strings.pop("status", None)
        existing = self._contacts.get((iddatabase, pk))
        if existing is None:
            new_status = status or DEFAULT_STATUS
            if new_status == "subscribed" and options.get("denysubscribenewcontact") is True:
                new_status = "unconfirmed"  # not subscribed, and not an opt-out either
            contact = Contact(self._next_id, iddatabase, new_status, strings)
            self._next_id += 1
            self._contacts[(iddatabase, pk)] = contact
            self._by_id[contact.idcontact] = contact
            return self._emailed(_result(True, pk, contact.idcontact, "insert", None), options, strings)
        if options.get("denyupdatecontact") is True:
            return _result(True, pk, existing.idcontact, "nothing", None)
        merged = {**existing.fields, **strings}
        new_status = status or existing.status
        action = "update"
        if existing.status == "unsubscribed" and new_status in ("unsubscribed", "subscribed"):
            if options.get("denysubscribeunsubscribedcontact") is True:
                new_status = "unsubscribed"
            elif status is None or status == "subscribed":
                # The option exists because a merge reactivates an unsubscribed contact by default.
                new_status, action = "subscribed", "reactivate"
        # The spec also lists restore/suspend/...; their triggers are undocumented, so any other
        # change, a status change included, is reported as "update".
        if merged == existing.fields and new_status == existing.status:
            action = "nothing"
        existing.fields = merged
        existing.status = new_status
        return self._emailed(_result(True, pk, existing.idcontact, action, None), options, merged)

    def _emailed(self, result: dict[str, Any], options: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
        """``sendemail``: the documented ``sendemail`` result when the action is one it sends for."""
        if options.get("sendemail") is not True:
            return result
        on_actions = str(options.get("sendemailonactions", "insert, restore"))
        if result["action"] in {name.strip() for name in on_actions.split(",")}:
            self.emails_sent += 1
            result["sendemail"] = {
                "emailsent": True,
                "emailaddress": fields.get("email", ""),
                "idsimplemessage": str(self.emails_sent),
            }
        return result
