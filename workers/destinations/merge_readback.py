"""Read a Magnews merge back when its answer gave no outcome: does the contact hold what was sent?

A merge answered 2xx with neither ``ok`` nor an outcome (``MergeOutcomeUnknown``) may or may not have
been carried out. Before it is tried again, ``MergeReadBack.confirm`` reads the contact by the
database's primary key through the contacts query (``select * from contacts where iddatabase=N and
<key>='<value>' limit 2``, ``mql.contacts_query``), sent through the Magnews gate like a merge. It is
confirmed when exactly one contact is found and it shows every value the merge set, compared as
strings (the API stores strings; surrounding blanks ignored): ``status`` with the contact's own
``status``, any other field with ``fields[name]`` (the query's contact object, as the reference's
example shows it; the top level as a fallback).

The MQL the reference shows has no ``IN`` or ``OR`` (only ``=``, ``and``, ``like``), so each contact
is one query. The read-backs of one event-loop iteration (the unknown items of one ``batchmerge``
answer arrive together) are made together, one query per distinct contact: at most one per merge whose
outcome is unknown, each through the gate, whose rate limit and concurrency cap bound them.

What a read-back cannot confirm, and is therefore retried (a dead letter if it persists): a key MQL
cannot quote (``mql.quote``), a value Magnews shows in another form than it was sent (a date field as
``dd/MM/yyyy HH:mm``), and a value an option kept from being written (``denyupdatecontact``, a
``status`` the consent options refuse), which a documented answer would report as ``ok: true``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.coalesce import Coalescer
from workers.destinations.contact_lookup import QueryContacts
from workers.destinations.mql import as_text, contact_field, contacts_query

__all__ = ["MergeReadBack", "ReadBack", "unlike"]

_SHOWN = 60  # characters of a value quoted in a note


@dataclass(frozen=True, slots=True)
class ReadBack:
    """The contact read back (``None`` when not exactly one was found) and, unless every value was
    found, why not (``differs``)."""

    contact: dict[str, Any] | None
    differs: str = ""

    @property
    def confirmed(self) -> bool:
        return self.contact is not None and not self.differs


def unlike(contact: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """ "" when ``contact`` shows every one of ``values``, else the first that it does not, said in a line."""
    for name, value in values.items():
        sent, shown = as_text(value).strip(), contact_field(contact, name)
        if shown is None:
            return f"no {name} (sent {sent[:_SHOWN]!r})"
        if shown.strip() != sent:
            return f"{name} is {shown.strip()[:_SHOWN]!r}, not {sent[:_SHOWN]!r}"
    return ""


class MergeReadBack:
    def __init__(self, query: QueryContacts):
        self._query = query
        self._reads: Coalescer[str, list[dict[str, Any]] | BaseException] = Coalescer(self._read_many)

    async def _read_many(self, queries: list[str]) -> list[list[dict[str, Any]] | BaseException]:
        distinct = list(dict.fromkeys(queries))
        # One query's failure is its own callers' only.
        answers = await asyncio.gather(*(self._query(query) for query in distinct), return_exceptions=True)
        found = dict(zip(distinct, answers, strict=True))
        return [found[query] for query in queries]

    async def confirm(self, database: int, key: str, values: Mapping[str, Any]) -> ReadBack:
        """Whether the contact whose ``key`` is ``values[key]`` holds ``values``; a failed query raises
        its ``DeliveryError`` (``DeliveryDeferred`` from the gate)."""
        pk = as_text(values.get(key))
        where = f"{key} = {pk[:_SHOWN]!r}"
        try:
            query = contacts_query(database, key, pk)
        except ValueError as exc:
            return ReadBack(None, f"cannot read the contact back by {key}: the value {exc}")
        answer = await self._reads.submit(query)
        if isinstance(answer, BaseException):
            raise answer
        if len(answer) != 1:
            return ReadBack(None, f"{len(answer) or 'no'} contacts of database {database} with {where}")
        differs = unlike(answer[0], values)
        return ReadBack(answer[0], f"the contact with {where} has {differs}" if differs else "")
