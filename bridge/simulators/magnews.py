"""Magnews REST API v19 simulator: contacts merge/batchmerge/find/query, account userinfo and webhooks.

A client's base URL is ``http://host:port``; it appends ``/v19/...`` as it does for the real service.
Errors use the vendor's format ``{"error": ..., "debugMessage": ...}``. Contact data problems are not
HTTP errors: they are answered 200 with ``ok: false`` per contact, as the response table shows.

Readings (``bridge.simulators.readings``): ``merge_result`` = ``table`` (default; the response
table's fields, batchmerge a bare array), ``examples`` (the examples' ``result``/``message``
objects without ``ok``, batchmerge ``{"results", "totalProcessed", ...}``, a refused single merge a
400) or ``message_only`` (no outcome at all); ``test_request`` = the shape of the unpublished test
request sent before a subscription is accepted (``bridge.simulators.magnews_webhooks.TEST_REQUESTS``);
``primary_key`` = the field that keys database 7: ``magnify_user_id`` (default, empty at start) or
``email`` (seeded with contacts for some Magnify users; a merge without an ``email`` is refused with
``missing_primary_key``, as a merge "by matching the database primary key value" must be). Contacts
are found with ``GET /v19/contacts/query`` (the MQL of ``bridge.simulators.magnews_query``).
Merge options that concern consent are honoured (``bridge.simulators.magnews_contacts``).

Extra control routes: ``POST /_sim/emit`` makes Magnews send a webhook event to every active
subscription of its topic; ``GET /_sim/contacts?iddatabase=`` lists stored contacts.

Authentication: the static ``token``, or an access token from the OAuth 2.0 refresh-token grant at
``POST /oauth2/token`` (see :mod:`bridge.simulators.magnews_oauth`; ``GET|POST /_sim/oauth``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from aiohttp import web

from bridge.simulators.common import (
    CONTROL_PREFIX,
    SIM_CORE,
    VendorProfile,
    control_error,
    create_sim_app,
    iso_utc,
    json_response,
    read_json,
)
from bridge.simulators.credentials import MAGNEWS_TOKEN
from bridge.simulators.magnews_contacts import ContactStore, email_database_seed
from bridge.simulators.magnews_oauth import MAGNEWS_OAUTH, TOKEN_PATH, MagnewsOAuth, oauth_control, token_endpoint
from bridge.simulators.magnews_query import parse_contact_query
from bridge.simulators.magnews_webhooks import (
    TEST_REQUESTS,
    WEBHOOK_STATUSES,
    Delivery,
    Webhook,
    WebhookRegistry,
    WebhookSender,
    normalize_topics,
    test_request_body,
    valid_uri,
)
from bridge.simulators.magnify_data import USER_IDS
from bridge.simulators.readings import Readings

__all__ = [
    "DEFAULT_DATABASES",
    "MAGNEWS_BACKEND",
    "MAGNIFY_DATABASE",
    "PRIMARY_KEYS",
    "USERINFO",
    "MagnewsBackend",
    "create_magnews_app",
]

DEFAULT_DATABASES: Mapping[int, str] = MappingProxyType({7: "magnify_user_id", 1: "email"})
MAGNIFY_DATABASE = 7
"""The database the tests, the demo and ``magbridge simulate`` merge Magnify users into."""
# Reading ``primary_key``: the field that keys MAGNIFY_DATABASE. The contract's database is keyed
# by the Magnify user id; most real ones are keyed by e-mail, which a Magnify metric does not carry.
PRIMARY_KEYS = ("magnify_user_id", "email")
BATCH_MAX = 1000
# The documented example body of GET /v19/account/userinfo.
USERINFO: Mapping[str, Any] = MappingProxyType(
    {
        "idaccount": 42,
        "accountName": "SunnyWear",
        "accountLogin": "sunnywear",
        "iduser": 17,
        "userName": "janedoe",
        "emailAddress": "jane.doe@example.com",
        "firstName": "Jane",
        "lastName": "Doe",
        "companyName": "SunnyWear Inc.",
        "locale": "ENG",
        "dateFormat": "dd/MM/yyyy",
        "timeFormat": "HH:mm",
        "dateTimeFormat": "dd/MM/yyyy HH:mm",
        "roleName": "Administrator",
    }
)


class MagnewsBackend:
    """Contacts, webhook subscriptions, the count of changes made to them (side effects) and of the
    merge items accepted (``ok: true``, a change or not; a ``batchmerge`` item refused is not one).

    Database ``MAGNIFY_DATABASE`` (7) is keyed as the reading ``primary_key`` says, once one is chosen
    (``attach``): ``magnify_user_id`` (empty at start) or ``email``, seeded with contacts for some of
    the Magnify simulator's users (``email_database_seed``). Choosing another answer, or a reset,
    starts the contacts afresh in that layout.
    """

    def __init__(
        self, databases: Mapping[int, str], *, require_https: bool, seed: int, oauth: MagnewsOAuth | None = None
    ) -> None:
        self._seed = seed
        self.oauth = oauth
        self._databases = dict(databases)
        self._readings: Readings | None = None
        self._layout = PRIMARY_KEYS[0]  # the reading's default: the databases as given
        self._contacts = self._new_contacts()
        self.webhooks = WebhookRegistry(user_id=USERINFO["iduser"])
        self.sender = WebhookSender()
        self.require_https = require_https
        self.rng = random.Random(seed)
        self.side_effects = 0
        self.merges_accepted = 0

    def attach(self, readings: Readings) -> None:
        """Follow ``readings["primary_key"]`` from now on."""
        self._readings = readings

    def _new_contacts(self) -> ContactStore:
        databases = dict(self._databases)
        if MAGNIFY_DATABASE in databases and self._layout != PRIMARY_KEYS[0]:
            databases[MAGNIFY_DATABASE] = self._layout
        store = ContactStore(databases)
        if databases.get(MAGNIFY_DATABASE) == "email":
            store.seed(MAGNIFY_DATABASE, email_database_seed(USER_IDS))
        return store

    @property
    def contacts(self) -> ContactStore:
        """The contacts, laid out as the ``primary_key`` reading says (checked on every use, as the
        reading may change at run time)."""
        wanted = self._readings["primary_key"] if self._readings is not None else self._layout
        if wanted != self._layout:
            self._layout = wanted
            self._contacts = self._new_contacts()
        return self._contacts

    def reset(self) -> None:
        """Forget contacts (back to the seed), subscriptions and issued tokens."""
        self._contacts = self._new_contacts()
        if self.oauth is not None:
            self.oauth.reset()
        self.webhooks.reset()
        self.rng = random.Random(self._seed)
        self.side_effects = 0
        self.merges_accepted = 0

    def summary(self) -> dict[str, Any]:
        """Counts for ``/_sim/state``."""
        return {
            "contacts": len(self.contacts),
            "merges_accepted": self.merges_accepted,
            "side_effects": self.side_effects,
            "webhooks": len(self.webhooks),
        }

    def new_event_id(self) -> str:
        """A reproducible UUID for an emitted event."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


MAGNEWS_BACKEND = web.AppKey("magnews_backend", MagnewsBackend)


class BadRequest(Exception):
    """A malformed request; answered 400 naming ``field``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


def _fail(status: int, error: str, debug_message: str) -> web.Response:
    return web.json_response({"error": error, "debugMessage": debug_message}, status=status)


def _bad_request(exc: BadRequest) -> web.Response:
    return _fail(400, f"invalid {exc.field}", str(exc))


def _render_error(request: web.Request, status: int, code: str, message: str) -> dict[str, Any]:
    try:
        error = HTTPStatus(status).phrase
    except ValueError:
        error = code
    return {"error": error, "debugMessage": message}


def _integer(mapping: Mapping[str, Any], key: str, field: str) -> int:
    """``mapping[key]`` when it is a JSON integer, else ``BadRequest`` naming ``field``."""
    value = mapping.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(field, "must be an integer")
    return value


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await read_json(request)
    except ValueError:
        raise BadRequest("body", "must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    return body


# --- contacts -------------------------------------------------------------------------------------------


def _merge_request(body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``(iddatabase, values, options)`` of a merge body, or ``BadRequest``."""
    values = body.get("values")
    if not isinstance(values, dict):
        raise BadRequest("values", "must be a JSON object")
    options = body.get("options")
    if not isinstance(options, dict):
        raise BadRequest("options", "must be a JSON object with iddatabase")
    return _integer(options, "iddatabase", "options.iddatabase"), values, options


# The merge answer's shape (reading ``merge_result``): the response table's object (``ok``, ``pk``,
# ``idcontact``, ``action``, ``errors``; batchmerge: a bare array of them, as the "Add to static
# group" example), the examples' object (``idcontact``, the values, ``result``, ``message``; batchmerge:
# ``{"results": [...], "totalProcessed", ...}``), or ``message_only``: neither ``ok`` nor an outcome,
# which the spec does not show and the bridge must treat as an unknown outcome.
MERGE_RESULTS = ("table", "examples", "message_only")
_EXAMPLE_RESULTS = {"insert": "created", "update": "updated", "reactivate": "updated", "nothing": "unchanged"}


def _shaped(reading: str, result: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """One contact's merge result as the ``merge_result`` reading answers it."""
    if reading == "table":
        return result
    shown = {name: value for name, value in values.items() if isinstance(value, str | int | float)}
    if reading == "message_only":
        return {**shown, "message": "Contact processed"}
    if not result["ok"]:
        return {
            "idcontact": None,
            **shown,
            "result": "error",
            "message": "Contact not merged",
            "errors": result["errors"],
        }
    outcome = _EXAMPLE_RESULTS.get(result["action"], "updated")
    return {"idcontact": result["idcontact"], **shown, "result": outcome, "message": f"Contact successfully {outcome}"}


def _count_change(backend: MagnewsBackend, result: dict[str, Any]) -> None:
    if result["ok"]:
        backend.merges_accepted += 1
        if result["action"] != "nothing":
            backend.side_effects += 1


async def _merge(request: web.Request) -> web.Response:
    backend = request.app[MAGNEWS_BACKEND]
    try:
        iddatabase, values, options = _merge_request(await _json_object(request))
    except BadRequest as exc:
        return _bad_request(exc)
    result = backend.contacts.merge(iddatabase, values, options)
    _count_change(backend, result)
    reading = request.app[SIM_CORE].readings["merge_result"]
    if reading == "examples" and not result["ok"]:
        # The examples' answer to a refused request is the documented error body.
        errors = ", ".join(f"{error['type']} ({error['field']})" for error in result["errors"])
        return _fail(400, "contact not merged", errors)
    return json_response(_shaped(reading, result, values))


def _batch_values(index: int, contact: Any) -> dict[str, Any]:
    """The ``[{"field", "value"}, ...]`` list of one batch item as a dict, or ``BadRequest``."""
    where = f"contacts[{index}]"
    if not isinstance(contact, dict) or not isinstance(contact.get("values"), list):
        raise BadRequest(f"{where}.values", "must be a list of {field, value} objects")
    values: dict[str, Any] = {}
    for position, item in enumerate(contact["values"]):
        if not isinstance(item, dict) or not isinstance(item.get("field"), str) or not item["field"]:
            raise BadRequest(f"{where}.values[{position}].field", "must be a non-empty string")
        values[item["field"]] = item.get("value")
    return values


def _batch_request(body: dict[str, Any]) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """``(iddatabase, values of each contact, options)`` of a batchmerge body, or ``BadRequest``."""
    iddatabase = _integer(body, "iddatabase", "iddatabase")
    contacts = body.get("contacts")
    if not isinstance(contacts, list):
        raise BadRequest("contacts", "must be a list")
    if len(contacts) > BATCH_MAX:
        raise BadRequest("contacts", f"must hold at most {BATCH_MAX} contacts per call, got {len(contacts)}")
    if "options" in body and not isinstance(body["options"], dict):
        raise BadRequest("options", "must be a JSON object")
    options = body.get("options", {})
    return iddatabase, [_batch_values(index, contact) for index, contact in enumerate(contacts)], options


async def _batchmerge(request: web.Request) -> web.Response:
    backend = request.app[MAGNEWS_BACKEND]
    try:
        iddatabase, batch, options = _batch_request(await _json_object(request))
    except BadRequest as exc:
        return _bad_request(exc)
    reading = request.app[SIM_CORE].readings["merge_result"]
    results = []
    for values in batch:
        result = backend.contacts.merge(iddatabase, values, options)
        _count_change(backend, result)
        results.append(result)
    shaped = [_shaped(reading, result, values) for result, values in zip(results, batch, strict=True)]
    if reading == "table":
        return json_response(shaped)
    actions = [result["action"] for result in results if result["ok"]]
    summary = {
        "totalProcessed": len(results),
        "totalCreated": actions.count("insert"),
        "totalUpdated": len(actions) - actions.count("insert"),
        "totalErrors": len(results) - len(actions),
    }
    return json_response({"results": shaped, **summary})


async def _get_contact(request: web.Request) -> web.Response:
    idcontact = int(request.match_info["idcontact"])
    contact = request.app[MAGNEWS_BACKEND].contacts.get(idcontact)
    if contact is None:
        return _fail(404, "contact not found", f"contact {idcontact} not found or missing permissions")
    return web.json_response(contact.to_json())


async def _query_contacts(request: web.Request) -> web.Response:
    """``GET /v19/contacts/query?query=<MQL>``: a bare array of contacts, as the example answers."""
    text = request.query.get("query")
    if not text:
        return _fail(400, "invalid query", "query parameter is required")
    try:
        query = parse_contact_query(text)
    except ValueError as exc:
        return _fail(400, "invalid query", str(exc))
    store = request.app[MAGNEWS_BACKEND].contacts
    found = [contact for contact in store.in_database(None) if query.matches(contact)]
    if query.limit is not None:
        del found[query.limit :]
    shown = [contact.to_query_json(store.primary_key_field(contact.iddatabase)) for contact in found]
    return json_response(shown)


async def _userinfo(request: web.Request) -> web.Response:
    return web.json_response(dict(USERINFO))


async def _version(request: web.Request) -> web.Response:
    return web.Response(text="v19")


# --- webhooks -------------------------------------------------------------------------------------------


def _checked_uri(backend: MagnewsBackend, uri: Any) -> str:
    if not valid_uri(uri, require_https=backend.require_https):
        scheme = "https" if backend.require_https else "http(s)"
        raise BadRequest("uri", f"must be an absolute {scheme} URI")
    return str(uri)


def _checked_topics(raw: Any) -> str:
    topics = normalize_topics(raw)
    if topics is None:
        raise BadRequest("topics", "must be a comma-separated list of topics such as contacts/update")
    return topics


async def _verify_endpoint(request: web.Request, uri: str) -> web.Response | None:
    """The documented 400 when the endpoint does not answer the test request with 200."""
    shape = request.app[SIM_CORE].readings["test_request"]
    body = test_request_body(shape, iso_utc())
    delivery = await request.app[MAGNEWS_BACKEND].sender.post(uri, body)
    if delivery.ok:
        return None
    detail = f"HTTP {delivery.status} test request failed" if delivery.status is not None else delivery.error
    return _fail(400, "test request failed", detail or "test request failed")


async def _create_webhook(request: web.Request) -> web.Response:
    backend = request.app[MAGNEWS_BACKEND]
    try:
        body = await _json_object(request)
        uri = _checked_uri(backend, body.get("uri"))
        topics = _checked_topics(body.get("topics"))
    except BadRequest as exc:
        return _bad_request(exc)
    failure = await _verify_endpoint(request, uri)
    if failure is not None:
        return failure
    webhook = backend.webhooks.create(uri, topics)
    backend.side_effects += 1
    return web.json_response(webhook.to_json())


def _webhook_changes(backend: MagnewsBackend, body: dict[str, Any]) -> tuple[int, dict[str, str]]:
    """``(id, {attribute: new value})`` of an update body, or ``BadRequest``."""
    webhook_id = _integer(body, "id", "id")
    changes: dict[str, str] = {}
    if "uri" in body:
        changes["uri"] = _checked_uri(backend, body["uri"])
    if "topics" in body:
        changes["topics"] = _checked_topics(body["topics"])
    if "status" in body:
        if body["status"] not in WEBHOOK_STATUSES:
            raise BadRequest("status", "must be active or suspended")
        changes["status"] = body["status"]
    return webhook_id, changes


def _webhook_not_found(webhook_id: int) -> web.Response:
    return _fail(404, "webhook not found", f"webhook {webhook_id} not found")


async def _update_webhook(request: web.Request) -> web.Response:
    backend = request.app[MAGNEWS_BACKEND]
    try:
        webhook_id, changes = _webhook_changes(backend, await _json_object(request))
    except BadRequest as exc:
        return _bad_request(exc)
    webhook = backend.webhooks.get(webhook_id)
    if webhook is None:
        return _webhook_not_found(webhook_id)
    if "uri" in changes and changes["uri"] != webhook.uri:
        # A new endpoint is verified like a new subscription.
        failure = await _verify_endpoint(request, changes["uri"])
        if failure is not None:
            return failure
    for name, value in changes.items():
        setattr(webhook, name, value)
    backend.webhooks.touch(webhook)
    backend.side_effects += 1
    return web.json_response(webhook.to_json())


def _lookup(request: web.Request) -> tuple[int, Webhook | None]:
    webhook_id = int(request.match_info["webhook_id"])
    return webhook_id, request.app[MAGNEWS_BACKEND].webhooks.get(webhook_id)


async def _get_webhook(request: web.Request) -> web.Response:
    webhook_id, webhook = _lookup(request)
    if webhook is None:
        return _webhook_not_found(webhook_id)
    return web.json_response(webhook.to_json())


async def _list_webhooks(request: web.Request) -> web.Response:
    return web.json_response([webhook.to_json() for webhook in request.app[MAGNEWS_BACKEND].webhooks.all()])


async def _delete_webhook(request: web.Request) -> web.Response:
    backend = request.app[MAGNEWS_BACKEND]
    webhook_id = int(request.match_info["webhook_id"])
    if not backend.webhooks.delete(webhook_id):
        return _webhook_not_found(webhook_id)
    backend.side_effects += 1
    return web.Response(status=204)


# --- control routes -------------------------------------------------------------------------------------


def _delivery_report(webhook: Webhook, delivery: Delivery) -> dict[str, Any]:
    report: dict[str, Any] = {"webhook": webhook.id, "status": delivery.status}
    if delivery.error is not None:
        report["error"] = delivery.error
    return report


async def _emit(request: web.Request) -> web.Response:
    """Send one event to every active subscription of its topic, in subscription order."""
    backend = request.app[MAGNEWS_BACKEND]
    try:
        body = await read_json(request)
    except ValueError as exc:
        return control_error(str(exc))
    if not isinstance(body, dict) or not isinstance(body.get("topic"), str) or not body["topic"]:
        return control_error("body must be {topic: str, data: object, id?: str}")
    if not isinstance(body.get("data"), dict) or not isinstance(body.get("id", ""), str):
        return control_error("data must be an object and id, if given, a string")
    event = {
        "id": body.get("id") or backend.new_event_id(),
        "topic": body["topic"],
        "timestamp": iso_utc(),
        "data": body["data"],
    }
    delivered = []
    for webhook in backend.webhooks.all():
        if webhook.wants(event["topic"]):
            delivery = await backend.sender.post(webhook.uri, event)
            webhook.last_exec_date = datetime.now(UTC)
            delivered.append(_delivery_report(webhook, delivery))
    return web.json_response({"event": event, "delivered": delivered})


async def _list_contacts(request: web.Request) -> web.Response:
    raw = request.query.get("iddatabase")
    if raw is not None and not raw.lstrip("-").isdigit():
        return control_error("iddatabase must be an integer")
    contacts = request.app[MAGNEWS_BACKEND].contacts.in_database(int(raw) if raw is not None else None)
    return web.json_response([contact.to_json() for contact in contacts])


def create_magnews_app(
    *,
    token: str = MAGNEWS_TOKEN,
    databases: dict[int, str] | None = None,
    seed: int = 0,
    require_https: bool = False,
    access_token_ttl: float = 3600.0,
    rotate_refresh_tokens: bool = True,
) -> web.Application:
    """A Magnews v19 simulator; ``databases`` maps each ``iddatabase`` to its primary-key field id.

    ``token`` is always accepted; the refresh-token grant issues access tokens that live
    ``access_token_ttl`` seconds and rotates the refresh token on each grant unless told not to.
    """
    oauth = MagnewsOAuth(static_token=token, access_ttl=access_token_ttl, rotate=rotate_refresh_tokens)
    backend = MagnewsBackend(
        DEFAULT_DATABASES if databases is None else databases, require_https=require_https, seed=seed, oauth=oauth
    )
    profile = VendorProfile(
        name="magnews",
        render_error=_render_error,
        authorize=oauth.authorize,
        public_paths=frozenset({TOKEN_PATH}),
        readings={"merge_result": MERGE_RESULTS, "test_request": TEST_REQUESTS, "primary_key": PRIMARY_KEYS},
    )
    app = create_sim_app(profile, backend, seed=seed)
    backend.attach(app[SIM_CORE].readings)
    app[MAGNEWS_BACKEND] = backend
    app[MAGNEWS_OAUTH] = oauth
    app.router.add_post(TOKEN_PATH, token_endpoint)
    app.router.add_route("*", CONTROL_PREFIX + "oauth", oauth_control)
    app.cleanup_ctx.append(backend.sender.lifespan)
    app.router.add_get("/v19", _version)
    app.router.add_get("/v19/account/userinfo", _userinfo)
    app.router.add_post("/v19/contacts/merge", _merge)
    app.router.add_post("/v19/contacts/batchmerge", _batchmerge)
    app.router.add_get(r"/v19/contacts/contact/{idcontact:\d+}", _get_contact)
    app.router.add_get("/v19/contacts/query", _query_contacts)
    app.router.add_post("/v19/webhooks/create", _create_webhook)
    app.router.add_post("/v19/webhooks/update", _update_webhook)
    app.router.add_get("/v19/webhooks/list", _list_webhooks)
    app.router.add_get(r"/v19/webhooks/{webhook_id:\d+}", _get_webhook)
    app.router.add_delete(r"/v19/webhooks/delete/{webhook_id:\d+}", _delete_webhook)
    app.router.add_post(CONTROL_PREFIX + "emit", _emit)
    app.router.add_get(CONTROL_PREFIX + "contacts", _list_contacts)
    return app
