"""Find a Magnews contact's primary key by another field: the query API, a Redis cache, one query per value.

A merge whose rule has a ``match`` names its contact by a field that need not be the database's
primary key (the Magnify user id, in a database keyed by e-mail). ``ContactLookup.primary_key``
answers "which key has the contact of this database whose ``field`` holds ``value``":

- from the cache (``keys.magnews_contact``), shared by every worker: ``{key}:{pk}`` for
  ``MAGNEWS_CONTACT_CACHE_SECONDS``, ``""`` (no such contact) for ``MAGNEWS_CONTACT_MISS_SECONDS``;
  the reads of one event-loop iteration share one ``MGET``;
- else through ``GET /v19/contacts/query`` (``mql.contacts_query``), sent through the Magnews gate
  like a merge; concurrent lookups of one value in this process share the one query.

The contact must show its key in ``fields[key]``. When the answer also shows ``fields.primarykey``
(the reference's example does) the two must agree: if they do not, ``key`` is not the database's
primary key, and the lookup fails permanently naming ``MAGBRIDGE_MAGNEWS_PRIMARY_KEY``. A value held
by two contacts fails permanently too, naming both: which one to merge into is the operator's call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from bridge.coalesce import Coalescer
from bridge.store import keys
from config.errors import PermanentDeliveryError
from workers.destinations.mql import contact_field, contacts_query
from workers.mapping import ContactRef

__all__ = ["ContactLookup", "QueryContacts"]

QueryContacts = Callable[[str], Awaitable[list[dict[str, Any]]]]
"""``MQL text -> the contacts it selects`` (``MagnewsClient.query_contacts`` through the gate)."""
Counted = Callable[[str, str], None]
"""``(source, result)``: ``cache`` or ``api``, ``found`` or ``none``; for the lookups metric."""


def _primary_key(ref: ContactRef, contacts: list[dict[str, Any]]) -> str | None:
    """The key of the one contact found, ``None`` for none, or ``PermanentDeliveryError`` saying why not."""
    if not contacts:
        return None
    where = f"database {ref.database}, {ref.field} = {ref.value!r}"
    if len(contacts) > 1:
        ids = " and ".join(str(contact.get("idcontact")) for contact in contacts[:2])
        raise PermanentDeliveryError(f"magnews: two contacts match ({where}): idcontact {ids}; merge into neither")
    contact = contacts[0]
    pk = (contact_field(contact, ref.key) or "").strip()
    shown = (contact_field(contact, "primarykey") or "").strip()
    setting = "MAGBRIDGE_MAGNEWS_PRIMARY_KEY (or the rule's key)"
    if not pk:
        raise PermanentDeliveryError(
            f"magnews: contact {contact.get('idcontact')} ({where}) has no {ref.key!r}: "
            f"{setting} must name the database's primary-key field"
        )
    if shown and shown != pk:
        raise PermanentDeliveryError(
            f"magnews: contact {contact.get('idcontact')} ({where}) has primary key {shown!r}, not its "
            f"{ref.key} {pk!r}: {setting} must name the database's primary-key field"
        )
    return pk


class ContactLookup:
    def __init__(
        self,
        redis: aioredis.Redis,
        query: QueryContacts,
        *,
        ttl_seconds: int,
        miss_ttl_seconds: int,
        counted: Counted | None = None,
    ):
        self._redis = redis
        self._query = query
        self._ttl = ttl_seconds
        self._miss_ttl = miss_ttl_seconds
        self._counted: Counted = counted or (lambda source, result: None)
        self._reads: Coalescer[str, bytes | None] = Coalescer(self._read_many)
        self._queries: dict[str, asyncio.Task[str | None]] = {}

    async def _read_many(self, cache_keys: list[str]) -> list[bytes | None]:
        values: list[bytes | None] = await self._redis.mget(cache_keys)
        return values

    async def primary_key(self, ref: ContactRef) -> str | None:
        """The key (its value) of the contact ``ref`` names, or ``None`` when there is no such contact;
        a failed query raises its ``DeliveryError`` (``DeliveryDeferred`` from the gate)."""
        cache_key = keys.magnews_contact(ref.database, ref.field, ref.value)
        cached = await self._reads.submit(cache_key)
        if cached is not None:
            key, sep, pk = cached.decode().partition(":")
            if not key:
                self._counted("cache", "none")
                return None
            if sep and key == ref.key and pk:  # a key cached under another key field is stale
                self._counted("cache", "found")
                return pk
        task = self._queries.get(cache_key)
        if task is None:
            task = self._queries[cache_key] = asyncio.create_task(self._ask(ref, cache_key))
            task.add_done_callback(lambda done: self._done(cache_key, done))
        # Shielded: one caller's cancellation does not cancel the query the others wait for.
        return await asyncio.shield(task)

    def _done(self, cache_key: str, task: asyncio.Task[str | None]) -> None:
        self._queries.pop(cache_key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every caller went away

    async def _ask(self, ref: ContactRef, cache_key: str) -> str | None:
        contacts = await self._query(contacts_query(ref.database, ref.field, ref.value))
        pk = _primary_key(ref, contacts)
        self._counted("api", "none" if pk is None else "found")
        if pk is None:
            await self._redis.set(cache_key, "", ex=self._miss_ttl)
        else:
            await self._redis.set(cache_key, f"{ref.key}:{pk}", ex=self._ttl)
        return pk

    async def forget(self, ref: ContactRef) -> None:
        """Drop what the cache says about ``ref``'s contact (a merge by it created a contact)."""
        await self._redis.delete(keys.magnews_contact(ref.database, ref.field, ref.value))
