"""``GET /openapi.json``: the OpenAPI 3.1 document of every route, built in code.

The replay body's schema comes from its Pydantic model, so the document cannot drift from what the
handler accepts; ``tests/test_openapi.py`` checks every route of the app against this document and
validates real responses with its schemas.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.store.records import EVENT_STATUSES
from bridge.store.replay import MAX_REPLAY_EVENTS, ReplayRequest

__all__ = ["build_openapi", "openapi_json"]

_PROBLEM = "application/problem+json"
_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# Every JSON type: what an unpublished body may hold in a field (listed, so that null is explicit).
_ANY_JSON = ["string", "integer", "number", "boolean", "object", "array", "null"]


def _object(required: list[str], properties: dict[str, Any], *, extra: bool = False) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": extra}


def _json(description: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return _json(description, _ref("Problem"), _PROBLEM)


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = schema or {"type": "string"}
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_ADMIN_ERRORS = {
    "400": _problem("A parameter or the body cannot be used; `errors` names it."),
    "401": _problem("The bearer token is missing or wrong."),
    "503": _problem("No admin token is configured (the admin API is off), or Redis does not answer."),
}
_SINCE = "Received at or after: ISO 8601, epoch milliseconds, or a span ago (`15m`, `2h`, `7d`)."
_UNTIL = "Received at or before; the same forms as `since`."
_SOURCE = "Only events from this source (`magnews`, `magnify`)."
_TYPE = "Only events of this type: exact, or a glob such as `*/msg/bounce`."
_LIMIT = _query("limit", "Events per page, 1 to 500 (default 50).", {"type": "integer", "minimum": 1, "maximum": 500})
_CURSOR = _query("cursor", "`next_cursor` of the previous page.")


def _schemas() -> dict[str, Any]:
    summary_properties = {
        "id": {"type": "string"},
        "source": {"type": "string"},
        "type": {"type": "string"},
        "status": {"type": "string", "enum": list(EVENT_STATUSES)},
        "occurred_at": {"type": "string"},
        "received_at": _TIME,
        "updated_at": _TIME,
        "error": {"type": "string"},
        "generation": {"type": "integer", "minimum": 0},
        "runs": {"type": "integer", "minimum": 0},
    }
    replay_request = ReplayRequest.model_json_schema()
    replay_request["description"] = (
        "Exactly one selection: `event_ids`, `dead_letters: true`, or a time range (`since` and/or "
        f"`until`, narrowed by `source` and `type`); at most {MAX_REPLAY_EVENTS} events per replay."
    )
    return {
        "Problem": _object(
            ["type", "title", "status", "detail", "instance"],
            {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": _object(["field", "message"], {"field": _STRING, "message": _STRING}),
                },
            },
        ),
        "WebhookEvent": {
            "type": "object",
            "description": (
                "Magnews does not publish this body; no object is refused for its content. Without a usable "
                "`topic`, or with a `data` that is not an object, it is stored as type `unclassified` (ignored)."
            ),
            "properties": {
                "id": {
                    "type": _ANY_JSON,
                    "description": "Printable ASCII, up to 200 characters (string or integer); else: a content hash.",
                },
                "topic": {
                    "type": _ANY_JSON,
                    "description": "The event type: a string of 1 to 200 characters; else `unclassified`.",
                },
                "timestamp": {
                    "type": _ANY_JSON,
                    "description": "ISO 8601 or epoch seconds/milliseconds; else: the time of receipt.",
                },
                "data": {"type": _ANY_JSON, "description": "An object, or null."},
            },
            "additionalProperties": True,
        },
        "WebhookAck": _object(
            ["accepted", "duplicates", "event_ids"],
            {
                "accepted": {"type": "integer"},
                "duplicates": {"type": "integer"},
                "event_ids": {"type": "array", "items": {"type": "string"}},
                "test": {"type": "boolean", "description": "Present on Magnews's test request."},
            },
        ),
        "Health": _object(["status"], {"status": {"const": "ok"}}),
        "Readiness": _object(
            ["status", "reasons", "checks"],
            {
                "status": {"enum": ["ready", "unavailable"]},
                "reasons": {"type": "array", "items": {"type": "string"}},
                "checks": {
                    "type": "object",
                    "description": "`redis`, `worker` (unless not required), `magnify` (when polling is on).",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["ok"],
                        "properties": {"ok": {"type": "boolean"}, "reason": {"type": "string"}},
                    },
                },
            },
        ),
        "EventSummary": _object(list(summary_properties), summary_properties),
        "EventList": _object(
            ["events", "count", "next_cursor"],
            {
                "events": {"type": "array", "items": _ref("EventSummary")},
                "count": {"type": "integer"},
                "next_cursor": {**_NULLABLE_STRING, "description": "`cursor` of the next page; null at the end."},
            },
        ),
        "Action": {
            "type": "object",
            "required": ["key", "rule", "index", "kind", "destination", "status", "attempts", "generation", "current"],
            "properties": {
                "key": {"type": "string", "description": "The action key, sent as Idempotency-Key."},
                "rule": {"type": "string"},
                "index": {"type": "integer"},
                "kind": {"type": "string"},
                "destination": {"type": "string"},
                "status": {"type": "string", "description": "pending, retrying, deferred, delivered or dead."},
                "requests": {"type": "array", "items": {"type": "string"}},
                "attempts": {"type": "array", "items": {"type": "object", "properties": {"at": _TIME}}},
                "last_error": _NULLABLE_STRING,
                "last_response": {"type": ["object", "null"]},
                "unsure": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Requests whose last attempt's outcome is unknown (timeout, lost connection, "
                    "5xx): their next attempt reads the effect back first.",
                },
                "vendor_status": {
                    "type": "object",
                    "description": "MagicBell's delivery status of the broadcast, as last seen (create answer "
                    "or read-back): status, total, failures, errors, and text such as "
                    "'processed, 2 of 3 recipients failed'.",
                    "properties": {
                        "status": _NULLABLE_STRING,
                        "total": {"type": ["integer", "null"]},
                        "failures": {"type": ["integer", "null"]},
                        "errors": {"type": "array", "items": {"type": "string"}},
                        "text": {"type": "string"},
                    },
                },
                "generation": {"type": ["integer", "null"], "description": "The event generation it was sent under."},
                "current": {"type": "boolean", "description": "Of the event's current generation."},
            },
            "additionalProperties": True,
        },
        "ReplayRecord": {
            "type": "object",
            "required": ["at", "mode", "by", "force", "previous_status", "generation", "reset_actions"],
            "properties": {
                "at": _TIME,
                "mode": {"enum": ["event_ids", "dead_letters", "time_range"]},
                "by": {"type": "string", "description": "`admin-api` or `cli`."},
                "force": {"type": "boolean"},
                "previous_status": {"type": "string"},
                "generation": {"type": "integer"},
                "reset_actions": {"type": "integer", "description": "Dead actions set back to pending."},
            },
        },
        "EventDetail": _object(
            [*summary_properties, "payload", "actions", "replays", "dead_letter_at", "job", "expires_in_seconds"],
            {
                **summary_properties,
                "payload": {"type": "object", "description": "The raw event as received."},
                "actions": {"type": "array", "items": _ref("Action")},
                "replays": {"type": "array", "items": _ref("ReplayRecord")},
                "dead_letter_at": _NULLABLE_TIME,
                "job": {
                    "type": ["object", "null"],
                    "description": "While the event is not final: the delivery job that owns it and when it is due.",
                    "properties": {"id": {"type": ["string", "null"]}, "due_at": _TIME},
                },
                "expires_in_seconds": {
                    "type": ["integer", "null"],
                    "description": "Until the retention window ends; null while kept as a dead letter.",
                },
            },
        ),
        "DeadLetter": _object(
            [*summary_properties, "dead_letter_at", "failed_actions"],
            {
                **summary_properties,
                "dead_letter_at": _NULLABLE_TIME,
                "failed_actions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["key", "rule", "destination", "last_error", "attempts"],
                        "properties": {
                            "key": {"type": "string"},
                            "rule": {"type": "string"},
                            "destination": {"type": "string"},
                            "last_error": _NULLABLE_STRING,
                            "last_response": {"type": ["object", "null"]},
                            "attempts": {"type": "integer"},
                        },
                    },
                },
            },
        ),
        "DeadLetterList": _object(
            ["dead_letters", "count", "total", "next_cursor"],
            {
                "dead_letters": {"type": "array", "items": _ref("DeadLetter")},
                "count": {"type": "integer"},
                "total": {"type": "integer", "description": "Dead letters held, whatever the filters."},
                "next_cursor": _NULLABLE_STRING,
            },
        ),
        "ReplayRequest": replay_request,
        "ReplayResult": _object(
            ["mode", "dry_run", "force", "replayed", "not_found", "already_queued", "busy", "events"],
            {
                "mode": {"enum": ["event_ids", "dead_letters", "time_range"]},
                "dry_run": {"type": "boolean"},
                "force": {"type": "boolean"},
                "replayed": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Queued again (with dry_run: would be).",
                },
                "not_found": {"type": "array", "items": {"type": "string"}, "description": "Ids with no event."},
                "already_queued": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "A delivery job is queued or running; left alone.",
                },
                "busy": {"type": "array", "items": {"type": "string"}, "description": "Kept changing; try again."},
                "events": {
                    "type": "array",
                    "items": _object(
                        ["id", "previous_status", "generation", "reset_actions"],
                        {
                            "id": {"type": "string"},
                            "previous_status": {"type": "string"},
                            "generation": {"type": "integer"},
                            "reset_actions": {"type": "integer"},
                        },
                    ),
                },
            },
        ),
    }


def _paths() -> dict[str, Any]:
    admin = {"tags": ["admin"], "security": [{"adminToken": []}]}
    return {
        "/webhooks/magnews": {
            "post": {
                "tags": ["ingest"],
                "summary": "Receive Magnews webhook events; 200 only once every event is stored.",
                "parameters": [_query("token", "The webhook secret, when MAGBRIDGE_WEBHOOK_SECRET is set.")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    _ref("WebhookEvent"),
                                    {"type": "array", "items": _ref("WebhookEvent")},
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json("Stored (or duplicates of events already stored).", _ref("WebhookAck")),
                    "400": _problem("Not JSON, not UTF-8, or an item that is not an object; `errors` names it."),
                    "401": _problem("The webhook token is missing or wrong."),
                    "403": _problem("The client address is not allowed to send webhooks."),
                    "405": _problem("Another method."),
                    "408": _problem("The body did not arrive in time."),
                    "413": _problem("Larger than the size limit, or too many events."),
                    "415": _problem("Content-Type is not application/json."),
                    "503": _problem("Redis does not answer; nothing was stored. Retry."),
                },
            }
        },
        "/healthz": {
            "get": {
                "tags": ["probes"],
                "summary": "The process lives.",
                "responses": {"200": _json("Alive.", _ref("Health"))},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["probes"],
                "summary": "Redis answers, a worker heartbeat is fresh, Magnify credentials work (when polling).",
                "responses": {
                    "200": _json("Ready.", _ref("Readiness")),
                    "503": _json("Not ready; `reasons` names each failing check.", _ref("Readiness")),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["probes"],
                "summary": "Prometheus text format: bridge-wide series from Redis and this process's own.",
                "responses": {"200": _json("The metrics.", {"type": "string"}, "text/plain")},
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["meta"],
                "summary": "This document.",
                "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
            }
        },
        "/admin/events": {
            "get": {
                **admin,
                "summary": "Events, newest first, filtered, a page at a time.",
                "parameters": [
                    _query("source", _SOURCE),
                    _query("type", _TYPE),
                    _query("status", "Only events in this status.", {"type": "string", "enum": list(EVENT_STATUSES)}),
                    _query("since", _SINCE),
                    _query("until", _UNTIL),
                    _LIMIT,
                    _CURSOR,
                ],
                "responses": {"200": _json("A page of events.", _ref("EventList")), **_ADMIN_ERRORS},
            }
        },
        "/admin/events/{event_id}": {
            "get": {
                **admin,
                "summary": "One event: envelope, raw payload, every action with its attempts, replays.",
                "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json("The event.", _ref("EventDetail")),
                    "404": _problem("No such event, or past the retention window."),
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/admin/dead-letters": {
            "get": {
                **admin,
                "summary": "Events with an action that failed for good, newest first, with the last error.",
                "parameters": [_query("source", _SOURCE), _query("type", _TYPE), _LIMIT, _CURSOR],
                "responses": {"200": _json("A page of dead letters.", _ref("DeadLetterList")), **_ADMIN_ERRORS},
            }
        },
        "/admin/replay": {
            "post": {
                **admin,
                "summary": "Queue events again: by ids, the dead letters, or a time range; dry_run and force.",
                "description": (
                    "Without `force`, actions already delivered are skipped and dead ones are tried again. "
                    "With `force`, every action is sent once more under a new key. Every replay is "
                    "recorded in the event's `replays`."
                ),
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ReplayRequest")}}},
                "responses": {
                    "202": _json("What was (or, with dry_run, would be) replayed.", _ref("ReplayResult")),
                    "415": _problem("Content-Type is not application/json."),
                    **_ADMIN_ERRORS,
                },
            }
        },
    }


def build_openapi() -> dict[str, Any]:
    """The document. It names no server: paths are relative to where it is served (OpenAPI's default)."""
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "magbridge",
            "version": "0.1.0",
            "description": "Event bridge between Magnews, Magnify and MagicBell: webhook receiver, "
            "probes, metrics and the admin API.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "MAGBRIDGE_ADMIN_TOKEN"}
            },
        },
    }
    return document


async def openapi_json(_: web.Request) -> web.Response:
    return web.json_response(build_openapi())
