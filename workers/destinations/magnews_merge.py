"""The Magnews sender: find the merge's contact, keep the latest per contact, then merge.

Each merge request carries its ``ContactRef`` (``workers.mapping``), and goes through three steps:

1. **Which contact.** A rule's ``match`` on a field other than the database's key looks the contact up
   (``contact_lookup``). Found, the merge names it by its key (``values[key]`` = the key found). Not
   found, the action is recorded ``unmatched`` (``ContactUnmatched``, final), unless the rule says
   ``unmatched = "create"`` and the values hold the key: then the merge creates the contact.
2. **Latest wins** (``contact_order``): the merge is admitted for the fields it is the newest for,
   waits (deferred) while another merge of the contact is in flight, or is ``superseded``.
3. **The merge**, coalesced into ``batchmerge`` calls (``merge_batcher``). An answer without outcome
   (``MergeOutcomeUnknown``) is read back by the contact's key (``merge_readback``) before the contact
   is released: found with the values sent, the merge is delivered as ``confirmed``; else retried.

A merge that names no contact (no match, and values without the key) goes straight to step 3, and
cannot be read back: an unknown outcome is retried. A resend after a timeout or 5xx is not read back
first: a merge is idempotent by key (and ordered, latest wins), and a resent ``batchmerge`` is one
call where reading its contacts back would be one query each; the resend's answer, if it has no
outcome, is read back. A merge sent with other values than its rule rendered (the key found, fewer fields) carries an
``Idempotency-Key`` of its own, derived from the action key and those values, so a vendor that
compares bodies never sees one key with two bodies.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import structlog

from config.errors import (
    ContactUnmatched,
    DeliveryDeferred,
    DeliveryError,
    DestinationPaused,
    MergeOutcomeUnknown,
    TransientDeliveryError,
)
from workers.delivery import Reported
from workers.destinations.contact_lookup import ContactLookup
from workers.destinations.contact_order import ContactOrder
from workers.destinations.http import ApiResponse
from workers.destinations.merge_batcher import MergeBatcher
from workers.destinations.merge_readback import MergeReadBack
from workers.mapping import ContactRef, Request

__all__ = ["MagnewsMerger"]

_log = structlog.get_logger("magbridge.magnews")
_TEXT_KEPT = 2000  # characters of the contact read back kept on the action, as of an answer


def _created(response: ApiResponse) -> bool:
    """Whether the merge answer says it inserted a contact (either documented shape)."""
    body = response.body
    return isinstance(body, dict) and (body.get("action") == "insert" or body.get("result") == "created")


def _confirmed(response: ApiResponse) -> bool:
    return isinstance(response, Reported) and response.outcome == "confirmed"


def _idempotency_key(request: Request, values: dict[str, Any]) -> str:
    if values == request.body["values"]:
        return request.key
    digest = hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return f"{request.key}.{digest}"


class MagnewsMerger:
    """A ``workers.delivery.Sender`` for ``magnews.merge`` actions."""

    def __init__(self, batcher: MergeBatcher, lookup: ContactLookup, order: ContactOrder, readback: MergeReadBack):
        self._batcher = batcher
        self._lookup = lookup
        self._order = order
        self._readback = readback

    async def __call__(self, request: Request, *, read_back: bool = False) -> ApiResponse:
        # read_back (a timeout or 5xx before) is not acted on: see the module doc.
        values: dict[str, Any] = request.body["values"]
        options: dict[str, Any] = request.body["options"]
        ref = request.contact
        if ref is None:
            return await self._batcher.merge(values, options, request.key)
        values = await self._identified(ref, values)
        identity = {ref.key, ref.field}
        ordered = [name for name in values if name not in identity]
        if not ordered:  # the contact's identity alone: nothing that could be older
            return await self._merge(ref, values, options, _idempotency_key(request, values))
        admission = await self._order.admit(ref, ordered)
        try:
            sent = {name: value for name, value in values.items() if name in identity or name in admission.fields}
            response = await self._merge(ref, sent, options, _idempotency_key(request, sent))
        finally:
            await self._order.release(admission)
        created = _created(response) or (_confirmed(response) and values is request.body["values"])
        if ref.lookup and created:
            # Created as the rule allows (or merged so, and read back), or found under a key it no
            # longer has (a stale cache): the next lookup asks Magnews again.
            if _created(response) and values is not request.body["values"]:
                _log.warning("magnews merge by a cached key created a contact", database=ref.database,
                             field=ref.field, key=ref.key)  # fmt: skip
            await self._lookup.forget(ref)
        return response

    async def _merge(self, ref: ContactRef, values: dict[str, Any], options: dict[str, Any], key: str) -> ApiResponse:
        """Send the merge; an answer without outcome is read back while the contact is still held."""
        try:
            return await self._batcher.merge(values, options, key)
        except MergeOutcomeUnknown as unknown:
            return await self._read_back(ref, values, unknown)

    async def _read_back(self, ref: ContactRef, values: dict[str, Any], unknown: MergeOutcomeUnknown) -> Reported:
        """``Reported(outcome="confirmed")`` when the contact holds ``values``, else the unknown outcome
        as a ``TransientDeliveryError`` saying what the read-back found."""
        try:
            found = await self._readback.confirm(ref.database, ref.key, values)
        except DestinationPaused:
            raise
        except DeliveryDeferred as exc:
            # Not read back, by our own limits: wait like any deferral, without counting an attempt.
            raise DeliveryDeferred(
                f"{unknown.message}; read-back deferred: {exc.reason}", retry_after=exc.retry_after
            ) from exc
        except DeliveryError as exc:
            raise TransientDeliveryError(
                f"{unknown.message}; read-back failed: {exc.message}", status=unknown.status, body=unknown.body
            ) from exc
        if not found.confirmed or found.contact is None:
            _log.info("magnews merge not confirmed by read-back", database=ref.database, key=ref.key,
                      differs=found.differs)  # fmt: skip
            raise TransientDeliveryError(
                f"{unknown.message}; read back: {found.differs}", status=unknown.status, body=unknown.body
            ) from unknown
        text = orjson.dumps(found.contact).decode()
        return Reported(
            status=unknown.status or 200, body=found.contact, text=text[:_TEXT_KEPT], headers={}, outcome="confirmed"
        )

    async def _identified(self, ref: ContactRef, values: dict[str, Any]) -> dict[str, Any]:
        """The values naming the contact by its key, or ``ContactUnmatched``."""
        if not ref.lookup:
            return {**values, ref.field: ref.value}
        pk = await self._lookup.primary_key(ref)
        if pk is not None:
            return {**values, ref.key: pk}
        if ref.create and values.get(ref.key):
            return values  # the very dict the rule rendered: a create, not a contact found
        why = f"no contact of database {ref.database} has {ref.field} = {ref.value!r}"
        if ref.create:
            why += f", and the values hold no {ref.key} to create one by"
        raise ContactUnmatched(why)
