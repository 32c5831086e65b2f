"""``GET /openapi.json``: the OpenAPI 3.1 document of every route, built in code.

The replay body's schema comes from its Pydantic model, so the document cannot drift from what the
handler accepts; ``tests/test_openapi.py`` checks every route of the app against this document,
validates it against the OpenAPI 3.1 schema and validates real responses with its schemas.

Every operation has an ``operationId``, takes an optional ``X-Request-ID`` and answers with one
(``bridge.web.request_id``). Problem documents are RFC 9457, type ``about:blank``: each error
response states its ``status`` and its ``title``, the status's phrase (``bridge.web.problems``).
``servers``: ``MAGBRIDGE_PUBLIC_URL`` when it is set, and the service that serves the document.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.store.records import EVENT_STATUSES
from bridge.store.replay import MAX_REPLAY_EVENTS, ReplayRequest
from bridge.version import version
from bridge.web.problems import status_title
from bridge.web.request_id import REQUEST_ID_HEADER
from bridge.web.state import SETTINGS

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


def _problem(status: int, description: str) -> dict[str, Any]:
    """An error response: a problem document with this status and its title (RFC 9457, about:blank)."""
    schema = {
        "allOf": [
            _ref("Problem"),
            {"properties": {"status": {"const": status}, "title": {"const": status_title(status)}}},
        ]
    }
    return _json(description, schema, _PROBLEM)


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = schema or {"type": "string"}
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_ADMIN_ERRORS = {
    "400": _problem(400, "A parameter or the body cannot be used; `errors` names it."),
    "401": _problem(401, "The bearer token is missing or wrong."),
    "503": _problem(503, "No admin token is configured (the admin API is off), or Redis does not answer."),
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
                "type": {"const": "about:blank", "description": "The problem means what its status means."},
                "title": {"type": "string", "description": "The status's phrase (RFC 9457, section 4.2.1)."},
                "status": {"type": "integer"},
                "detail": {"type": "string", "description": "What went wrong in particular."},
                "instance": {"type": "string", "description": "The request's path (never its query)."},
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
                    "description": "`redis`, `worker` (only with MAGBRIDGE_READY_REQUIRES_WORKER=true), "
                    "`magnify` (when polling is on), `magicbell` and `magnews` (only while paused; not blocking).",
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
                "status": {
                    "type": "string",
                    "description": "pending, retrying, deferred, delivered or dead; or, for a Magnews merge that "
                    "needed no request, unmatched (no contact found) or superseded (a newer merge for the contact "
                    "went first): final, neither delivered nor a dead letter.",
                },
                "note": {
                    "type": "string",
                    "description": "Why an unmatched or superseded action was not sent, e.g. 'no contact of "
                    "database 7 has magnify_user_id = ...'.",
                },
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
                "operationId": "receiveMagnewsWebhook",
                "tags": ["ingest"],
                "summary": "Receive Magnews webhook events; 200 only once every event is stored.",
                "parameters": [
                    _query("token", "The webhook secret, when MAGBRIDGE_WEBHOOK_SECRET is set."),
                    {
                        "name": "X-Webhook-Token",
                        "in": "header",
                        "required": False,
                        "description": "The webhook secret, instead of `token` (for senders that can set headers).",
                        "schema": {"type": "string"},
                    },
                ],
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
                    "400": _problem(400, "Not JSON, not UTF-8, or an item that is not an object; `errors` names it."),
                    "401": _problem(401, "The webhook token is missing or wrong."),
                    "403": _problem(403, "The client address is not allowed to send webhooks."),
                    "405": _problem(405, "Another method."),
                    "408": _problem(408, "The body did not arrive in time."),
                    "413": _problem(413, "Larger than the size limit, or too many events."),
                    "415": _problem(415, "Content-Type is not application/json."),
                    "503": _problem(
                        503,
                        "Redis does not answer; nothing was stored. Or, with MAGBRIDGE_REDIS_MIN_REPLICAS_ACK, "
                        "the replicas did not confirm in time: stored, not acknowledged. Retry.",
                    ),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "getHealth",
                "tags": ["probes"],
                "summary": "The process lives.",
                "responses": {"200": _json("Alive.", _ref("Health"))},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "getReadiness",
                "tags": ["probes"],
                "summary": "Redis answers; Magnify credentials work (when polling); a worker heartbeat is fresh "
                "(only with MAGBRIDGE_READY_REQUIRES_WORKER=true).",
                "responses": {
                    "200": _json("Ready.", _ref("Readiness")),
                    "503": _json("Not ready; `reasons` names each failing check.", _ref("Readiness")),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "tags": ["probes"],
                "summary": "Prometheus text format: this process's own series, and the queue's (scope=\"queue\").",
                "responses": {"200": _json("The metrics.", {"type": "string"}, "text/plain")},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "tags": ["meta"],
                "summary": "This document.",
                "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
            }
        },
        "/admin/events": {
            "get": {
                "operationId": "listEvents",
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
                "operationId": "getEvent",
                **admin,
                "summary": "One event: envelope, raw payload, every action with its attempts, replays.",
                "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json("The event.", _ref("EventDetail")),
                    "404": _problem(404, "No such event, or its record expired (the detail says when it came)."),
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/admin/dead-letters": {
            "get": {
                "operationId": "listDeadLetters",
                **admin,
                "summary": "Events with an action that failed for good, newest first, with the last error.",
                "parameters": [_query("source", _SOURCE), _query("type", _TYPE), _LIMIT, _CURSOR],
                "responses": {"200": _json("A page of dead letters.", _ref("DeadLetterList")), **_ADMIN_ERRORS},
            }
        },
        "/admin/replay": {
            "post": {
                "operationId": "replayEvents",
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
                    "415": _problem(415, "Content-Type is not application/json."),
                    **_ADMIN_ERRORS,
                },
            }
        },
    }


def _with_request_ids(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation takes an optional ``X-Request-ID``, and every response carries one."""
    for operations in paths.values():
        for operation in operations.values():
            operation["parameters"] = [*operation.get("parameters", []), {"$ref": "#/components/parameters/RequestId"}]
            for response in operation["responses"].values():
                response["headers"] = {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}
    return paths


_REQUEST_ID_RULE = (
    "Used as given when it is 1 to 128 characters of letters, digits and `._:=+/-`, beginning with a letter or "
    "digit; otherwise the service makes one (32 hex digits). It is logged as `request_id` on every line the "
    "request logs."
)


def build_openapi(public_url: str | None = None) -> dict[str, Any]:
    """The document; ``public_url`` (``MAGBRIDGE_PUBLIC_URL``) is named as the first server."""
    servers = [{"url": public_url.rstrip("/"), "description": "MAGBRIDGE_PUBLIC_URL"}] if public_url else []
    servers.append({"url": "/", "description": "The service that serves this document."})
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "magbridge",
            "version": version(),
            "description": "Event bridge between Magnews, Magnify and MagicBell: webhook receiver, "
            "probes, metrics and the admin API. Errors are RFC 9457 problem documents.",
        },
        "servers": servers,
        "paths": _with_request_ids(_paths()),
        "components": {
            "schemas": _schemas(),
            "parameters": {
                "RequestId": {
                    "name": REQUEST_ID_HEADER,
                    "in": "header",
                    "required": False,
                    "description": f"An id for this request. {_REQUEST_ID_RULE}",
                    "schema": {"type": "string"},
                }
            },
            "headers": {
                "RequestId": {
                    "description": "The request's id: the client's when it was sane, else one made here.",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:=+/-]{0,127}$"},
                }
            },
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "MAGBRIDGE_ADMIN_TOKEN"}
            },
        },
    }
    return document


async def openapi_json(request: web.Request) -> web.Response:
    public_url = request.app[SETTINGS].public_url
    return web.json_response(build_openapi(str(public_url) if public_url else None))
