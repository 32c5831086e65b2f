"""Mapping: evaluate the rules for one event and render each action into the requests to send.

Event data reach templates only as values of the context; nothing from an event is compiled. Each
rendered request is checked against the destination's documented limits here, so an action that
would be invalid fails permanently with a clear reason instead of being sent.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2

from bridge.store.records import StoredEvent
from config.rules import FIELD_ID_PATTERN, BroadcastSpec, CompiledRule, MergeSpec, RuleSet, RuleTemplate
from workers.destinations.mql import quote

__all__ = ["BROADCAST_ID_NAMESPACE", "ContactRef", "PlannedAction", "Request", "action_key", "plan_actions"]

# Fixed namespace: broadcast ids must be the same in every process and every release.
BROADCAST_ID_NAMESPACE = uuid.UUID("6f1c5a52-9a0e-4e8e-9a57-3b1f0d5e2c11")
_MAX_RECIPIENTS = 1000  # MagicBell: recipients max items
_MAX_TITLE = 255
_MAX_CONTENT = 10_485_760
_MAX_URL = 2048
_MAX_CATEGORY = 255
_CATEGORY_PATTERN = re.compile(r"^[A-Za-z0-9_\.\-/:]+$")
_EMAIL_PATTERN = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_FIELD_ID = re.compile(FIELD_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class ContactRef:
    """Which Magnews contact a merge is for, and when its event happened (latest wins).

    The contact is the one of ``database`` whose field ``field`` holds ``value``; ``key`` is the
    database's primary-key field, which the merge names the contact by. ``lookup``: find the key's
    value through the query API first (a match on another field, or a rule that must not create the
    contact); ``create``: when none is found, merge anyway, which creates the contact if the values
    hold its key. ``origin`` (the event id) lets a merge's own retry pass its own earlier admission.
    """

    database: int
    key: str
    field: str
    value: str
    lookup: bool
    create: bool
    occurred_ms: int
    origin: str


@dataclass(frozen=True, slots=True)
class Request:
    """One request of an action: its own idempotency key and body; a merge's ``contact``."""

    key: str
    body: dict[str, Any]
    contact: ContactRef | None = None


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """An action of a matched rule, rendered; ``error`` set means it cannot be sent at all."""

    key: str
    rule: str
    index: int
    kind: str
    destination: str
    requests: tuple[Request, ...] = ()
    error: str | None = None


class _RenderError(Exception):
    pass


def action_key(event_id: str, rule: str, index: int, generation: int) -> str:
    """Stable across retries and replays; a forced replay raises ``generation`` to send again."""
    return hashlib.sha256(f"{event_id}\n{rule}\n{index}\n{generation}".encode()).hexdigest()


def _context(event: StoredEvent, rules: RuleSet, extra: dict[str, Any]) -> dict[str, Any]:
    data = event.payload.get("data") if event.source == "magnews" else event.payload
    return {
        **rules.template_globals,
        "event": {
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
        },
        "data": data if isinstance(data, dict) else {},
        "payload": event.payload,
        **extra,
    }


def _render(templates: dict[str, RuleTemplate], field: str, context: dict[str, Any]) -> str:
    try:
        return templates[field].render(context).strip()
    except jinja2.TemplateError as exc:
        raise _RenderError(f"{field}: {exc}") from exc


def _optional(templates: dict[str, RuleTemplate], field: str, context: dict[str, Any]) -> str | None:
    return _render(templates, field, context) or None if field in templates else None


def _recipients(spec: BroadcastSpec, templates: dict[str, RuleTemplate], context: dict[str, Any]) -> list[str]:
    addresses: list[str] = []
    for index in range(len(spec.recipients)):
        for part in _render(templates, f"recipients.{index}", context).split(","):
            address = part.strip()
            if not address:
                continue
            if not _EMAIL_PATTERN.match(address):
                raise _RenderError(f"recipients.{index}: {address[:80]!r} is not an e-mail address")
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise _RenderError("recipients: rendered to no address (is MAGBRIDGE_MAGICBELL_RECIPIENTS set?)")
    return addresses


def _check_limits(broadcast: dict[str, Any]) -> None:
    title = broadcast["title"]
    if not 1 <= len(title) <= _MAX_TITLE:
        raise _RenderError(f"title: {len(title)} characters; MagicBell accepts 1 to {_MAX_TITLE}")
    if broadcast["content"] is not None and len(broadcast["content"]) > _MAX_CONTENT:
        raise _RenderError(f"content: longer than {_MAX_CONTENT} characters")
    url = broadcast["action_url"]
    if url is not None and (len(url) > _MAX_URL or not url.startswith(("https://", "http://"))):
        raise _RenderError(f"action_url: must be an http(s) URL of at most {_MAX_URL} characters")
    for field in ("category", "topic"):
        value = broadcast[field]
        if value is not None and (len(value) > _MAX_CATEGORY or not _CATEGORY_PATTERN.match(value)):
            raise _RenderError(f"{field}: {value[:80]!r} must match {_CATEGORY_PATTERN.pattern}, max {_MAX_CATEGORY}")


def _broadcast_requests(
    spec: BroadcastSpec, templates: dict[str, RuleTemplate], context: dict[str, Any], key: str, rule: str
) -> tuple[Request, ...]:
    recipients = _recipients(spec, templates, context)
    base: dict[str, Any] = {
        "title": _render(templates, "title", context),
        "content": _optional(templates, "content", context),
        "action_url": _optional(templates, "action_url", context),
        "category": _optional(templates, "category", context),
        "topic": _optional(templates, "topic", context),
    }
    _check_limits(base)
    attributes = {name: _render(templates, f"custom_attributes.{name}", context) for name in spec.custom_attributes}
    attributes |= {"magbridge_event_id": context["event"]["id"], "magbridge_rule": rule}
    chunks = [recipients[i : i + _MAX_RECIPIENTS] for i in range(0, len(recipients), _MAX_RECIPIENTS)]
    requests = []
    for number, chunk in enumerate(chunks):
        # One chunk keeps the action key itself; more get their own stable suffix each.
        request_key = key if len(chunks) == 1 else f"{key}-{number}"
        body = {
            "id": str(uuid.uuid5(BROADCAST_ID_NAMESPACE, request_key)),
            **{name: value for name, value in base.items() if value is not None},
            "recipients": [{"email": address} for address in chunk],
            "custom_attributes": attributes,
        }
        requests.append(Request(key=request_key, body=body))
    return tuple(requests)


def _merge_requests(
    spec: MergeSpec, templates: dict[str, RuleTemplate], context: dict[str, Any], key: str
) -> tuple[Request, ...]:
    database = _render(templates, "database", context)
    if not database.isdigit() or int(database) < 1:
        raise _RenderError(f"database: {database!r} is not a database id (is MAGBRIDGE_MAGNEWS_DATABASE_ID set?)")
    values = {name: _render(templates, f"values.{name}", context) for name in spec.values}
    options: dict[str, Any] = {
        name: _render(templates, f"options.{name}", context) if isinstance(value, str) else value
        for name, value in spec.options.items()
    }
    options["iddatabase"] = int(database)
    contact = _contact_ref(spec, templates, context, int(database), values)
    return (Request(key=key, body={"values": values, "options": options}, contact=contact),)


def _occurred_ms(event: dict[str, Any]) -> int:
    try:
        moment = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))
    except ValueError:
        return int(event["received_at"])  # stored events always have a readable time; this is a guard
    return int(moment.timestamp() * 1000)


def _contact_ref(
    spec: MergeSpec, templates: dict[str, RuleTemplate], context: dict[str, Any], database: int, values: dict[str, str]
) -> ContactRef | None:
    """The merge's contact; ``None`` when nothing names it (no match, and the values lack the key)."""
    key = _render(templates, "key", context) if "key" in templates else str(context.get("magnews_primary_key") or "")
    if key and not _FIELD_ID.match(key):
        raise _RenderError(f"key: {key[:80]!r} is not a field id")
    event = context["event"]
    if spec.match is None:
        if not values.get(key):
            return None  # sent as it is, and not ordered: nothing says which contact it is
        return ContactRef(database, key, key, values[key], False, True, _occurred_ms(event), event["id"])
    if not key:
        raise _RenderError("key: the database's primary-key field is unknown (is MAGBRIDGE_MAGNEWS_PRIMARY_KEY set?)")
    value = _render(templates, "match.value", context)
    create = spec.unmatched == "create"
    # Matched on the key itself and allowed to create: the merge by key does both, no lookup needed.
    lookup = not (spec.match.field == key and create)
    try:
        if lookup:
            quote(value)
        elif not value:
            raise ValueError("is empty")
    except ValueError as exc:
        raise _RenderError(f"match.value: {exc}") from None
    return ContactRef(database, key, spec.match.field, value, lookup, create, _occurred_ms(event), event["id"])


def _plan(rule: CompiledRule, index: int, event: StoredEvent, context: dict[str, Any]) -> PlannedAction:
    spec = rule.actions[index]
    templates = rule.templates[index]
    key = action_key(event.id, rule.name, index, event.generation)
    destination = "magicbell" if isinstance(spec, BroadcastSpec) else "magnews"
    try:
        if isinstance(spec, BroadcastSpec):
            requests = _broadcast_requests(spec, templates, context, key, rule.name)
        else:
            requests = _merge_requests(spec, templates, context, key)
    except _RenderError as exc:
        return PlannedAction(key, rule.name, index, spec.kind, destination, error=f"actions.{index}.{exc}")
    return PlannedAction(key, rule.name, index, spec.kind, destination, requests=requests)


def plan_actions(rules: RuleSet, event: StoredEvent, extra_context: dict[str, Any]) -> list[PlannedAction]:
    """Every action of every rule matching the event, rendered, in rule-file order."""
    context = _context(event, rules, extra_context)
    return [
        _plan(rule, index, event, context)
        for rule in rules.matching(event.source, event.type)
        for index in range(len(rule.actions))
    ]
