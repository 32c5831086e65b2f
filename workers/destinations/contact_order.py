"""Latest wins: an older merge never overwrites a newer one for the same Magnews contact.

Magnify lists the metrics of a batch in no particular order (or newest first), and several jobs and
workers deliver at once, so merges for one contact reach this module in any order. Each merge is
admitted by ``order_admit.lua`` against the contact's hash (``keys.magnews_order``), shared by every
worker, per field it writes (the contact's identity fields are not ordered):

- a field whose newest admitted merge is as new as this one or newer is not this merge's to write;
  a merge left with no field to write is **superseded** (``MergeSuperseded``: final, not sent);
- while another merge of the contact is in flight (it holds the contact, with a lease), this one
  **waits**: ``DeliveryDeferred``, so its event comes back shortly without holding a worker slot, and
  two requests for one contact never race to Magnews;
- else it **goes**, holding the contact, and the marks of its fields are raised to its time; it sends
  only those fields. ``release`` frees the contact when the request ended, however it ended.

The marks are raised at admission, not on success: a merge that then fails keeps its place, so older
ones are superseded while it is retried (its own retry passes its own marks: the mark names its
event). One that fails for good leaves its marks, so older merges stay superseded: the contact keeps
its older values, and the dead letter says which merge to replay. A hash lives for the retention
from its last admission, so memory is bounded by the contacts merged within it.

The admissions of one event-loop iteration share one script call, each contact's newest first, so
several metrics of one user in one batch cost one request: the newest goes, the others are superseded
at once (or wait, for a field only they write).
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis

from bridge.coalesce import Coalescer
from bridge.store import keys
from bridge.store.scripts import script
from config.errors import DeliveryDeferred, MergeSuperseded
from workers.mapping import ContactRef

__all__ = ["Admission", "ContactOrder"]

_MAX_WAIT = 0.2
"""Seconds a merge waits for one in flight, at most (a merge takes milliseconds; a lease far longer)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """A merge that holds its contact: the fields it may write, and what releases it."""

    key: str
    token: str
    fields: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Ask:
    key: str
    token: str
    origin: str
    occurred_ms: int
    fields: tuple[str, ...]


class ContactOrder:
    def __init__(self, redis: aioredis.Redis, *, ttl_seconds: int, lease_seconds: float):
        self._ttl_ms = ttl_seconds * 1000
        self._lease_ms = int(lease_seconds * 1000)
        self._admit_script = script(redis, __package__, "order_admit.lua")
        self._complete_script = script(redis, __package__, "order_complete.lua")
        self._admissions: Coalescer[_Ask, list[bytes | int]] = Coalescer(self._admit_many)
        # A batchmerge's answer ends all its merges in one iteration: their releases share one call.
        self._releases: Coalescer[tuple[str, str], int] = Coalescer(self._release_many)
        self._token_prefix = uuid.uuid4().hex[:16] + ":"
        self._tokens = itertools.count()

    async def _admit_many(self, asks: list[_Ask]) -> list[list[bytes | int]]:
        # Each contact's newest first, so one call lets it go and supersedes the older ones at once.
        order = sorted(range(len(asks)), key=lambda n: (asks[n].key, -asks[n].occurred_ms))
        args: list[str | int] = [self._ttl_ms, self._lease_ms]
        for n in order:
            ask = asks[n]
            args += [ask.token, ask.origin, ask.occurred_ms, len(ask.fields), *ask.fields]
        rows = await self._admit_script(keys=[asks[n].key for n in order], args=args)
        results: list[list[bytes | int]] = [[] for _ in asks]
        for n, row in zip(order, rows, strict=True):
            results[n] = row
        return results

    async def _release_many(self, releases: list[tuple[str, str]]) -> list[int]:
        rows = await self._complete_script(keys=[key for key, _ in releases], args=[token for _, token in releases])
        return [int(row) for row in rows]

    async def admit(self, ref: ContactRef, fields: Iterable[str]) -> Admission:
        """Hold ``ref``'s contact for the ``fields`` this merge is the newest for; raises
        ``MergeSuperseded`` when it is the newest for none, ``DeliveryDeferred`` while another merge
        of the contact is in flight."""
        written = tuple(sorted(set(fields)))
        key = keys.magnews_order(ref.database, ref.field, ref.value)
        token = f"{self._token_prefix}{next(self._tokens)}"
        verdict, *rest = await self._admissions.submit(_Ask(key, token, ref.origin, ref.occurred_ms, written))
        if verdict == b"go":
            return Admission(key, token, frozenset(str(field, "utf-8") for field in rest if isinstance(field, bytes)))
        if verdict == b"superseded":
            by = rest[0].decode() if rest and isinstance(rest[0], bytes) else "?"
            raise MergeSuperseded(f"superseded: event {by} is as new or newer for {', '.join(written)}")
        wait_ms = int(rest[0]) if rest else 0
        # Spread the waiting merges so they do not all come back in the same instant.
        retry_after = min(max(wait_ms, 1) / 1000, _MAX_WAIT) * (1 + random.random())
        raise DeliveryDeferred("magnews: another merge of this contact is in flight", retry_after=retry_after)

    async def release(self, admission: Admission) -> None:
        """Free the contact (queued even if the caller is cancelled)."""
        await self._releases.post((admission.key, admission.token))
