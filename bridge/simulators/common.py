"""Machinery shared by the three vendor simulators.

Each simulator is an aiohttp application made by :func:`create_sim_app`. One middleware wraps every
API route (everything outside ``/_sim/``) in this order::

    record -> faults -> bearer auth -> idempotency -> handler

so a test sees every request with the status it got, can make the vendor fail the ways real vendors
fail, and can check that a retried request with an ``Idempotency-Key`` has exactly one side effect.

Control routes, on every simulator and without auth, faults or recording:

- ``GET /_sim/requests?path=<prefix>&method=<METHOD>``: the recorded requests, oldest first
- ``GET|POST /_sim/faults``: read, or merge a JSON object of :class:`Faults` fields into, the faults
- ``GET|POST /_sim/readings``: read, or choose, the answers to the spec's open questions
  (:mod:`bridge.simulators.readings`)
- ``POST /_sim/reset``: forget records, faults, idempotency keys and data (back to the seed)
- ``GET /_sim/state``: a vendor-specific summary (counts)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.simulators.faults import Faults
from bridge.simulators.readings import Readings

__all__ = [
    "CONTROL_PREFIX",
    "IDEMPOTENCY_HEADER",
    "REPLAYED_HEADER",
    "SIM_CORE",
    "Backend",
    "Faults",
    "RecordedRequest",
    "SimCore",
    "VendorProfile",
    "bearer_authorizer",
    "control_error",
    "create_sim_app",
    "iso_utc",
    "json_response",
    "read_json",
    "vendor_error",
]

CONTROL_PREFIX = "/_sim/"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Bounded so a simulator left running for days in staging does not grow without limit.
MAX_RECORDS = 10_000
MAX_IDEMPOTENCY_KEYS = 10_000
# MagicBell accepts a 10 MiB ``content``; aiohttp's default 1 MiB body limit would refuse it.
MAX_BODY_BYTES = 32 * 1024 * 1024

ErrorRenderer = Callable[[web.Request, int, str, str], Any]
"""``(request, status, code, message) -> JSON body`` in the vendor's error format."""

Authorizer = Callable[[web.Request], str | None]
"""Returns ``None`` when the request is authorized, else the reason it is not."""


def iso_utc(moment: datetime | None = None) -> str:
    """ISO 8601 UTC timestamp with milliseconds and a ``Z`` suffix, e.g. ``2025-11-14T13:00:00.123Z``."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class RecordedRequest:
    """One API request as the simulator saw it, with the status it was answered.

    ``status`` is 0 while the request is in flight, and stays 0 when the connection was dropped.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int
    at: float


class Backend(Protocol):
    """The vendor-specific data behind a simulator."""

    def reset(self) -> None:
        """Go back to the initial, seeded data."""

    def summary(self) -> dict[str, Any]:
        """Counts shown by ``GET /_sim/state``."""


@dataclass(frozen=True)
class VendorProfile:
    """What the shared middleware needs to know about one vendor."""

    name: str
    render_error: ErrorRenderer
    authorize: Authorizer
    public_paths: frozenset[str] = frozenset()
    """API paths that take no bearer token (still recorded and subject to faults), e.g. a token URL."""
    readings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The spec's open questions and the answers this simulator can give; the first is the default
    (``bridge.simulators.readings``)."""


@dataclass(frozen=True)
class _StoredResponse:
    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str]

    def replay(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers={**self.headers, REPLAYED_HEADER: "true"})


# Headers aiohttp recomputes for every response; copying them into a replay would be wrong.
_NOT_REPLAYED = frozenset({"content-length", "date", "server", "transfer-encoding", "connection"})


class IdempotencyStore:
    """First 2xx response per ``Idempotency-Key``, replayed to later requests with the same body.

    A per-key lock makes concurrent retries wait for the first attempt instead of repeating its effect.
    """

    def __init__(self) -> None:
        self._responses: OrderedDict[str, _StoredResponse] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def clear(self) -> None:
        """Forget every stored response."""
        self._responses.clear()

    @asynccontextmanager
    async def _hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def run(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer ``request`` from the store, or through ``handler`` and store a 2xx answer."""
        key = request.headers[IDEMPOTENCY_HEADER]
        fingerprint = _fingerprint(request.method, request.path_qs, await request.read())
        async with self._hold(key):
            stored = self._responses.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    message = f"Idempotency-Key {key!r} was reused with a different request body"
                    return vendor_error(request, 422, "idempotency_key_reused", message)
                return stored.replay()
            response = await handler(request)
            # Only successes are kept: a retry after a 5xx must really run again.
            if 200 <= response.status < 300 and isinstance(response, web.Response):
                self._store(key, fingerprint, response)
            return response

    def _store(self, key: str, fingerprint: str, response: web.Response) -> None:
        body = response.body
        if not isinstance(body, bytes):
            return
        headers = {name: value for name, value in response.headers.items() if name.lower() not in _NOT_REPLAYED}
        self._responses[key] = _StoredResponse(fingerprint, response.status, body, headers)
        while len(self._responses) > MAX_IDEMPOTENCY_KEYS:
            self._responses.popitem(last=False)


def _fingerprint(method: str, path_qs: str, raw: bytes) -> str:
    """Identity of a request body; JSON is compared by value so key order and spacing do not matter."""
    try:
        canonical = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    except (ValueError, TypeError):  # not JSON, or numbers beyond 64 bits: compared as sent
        canonical = raw
    return hashlib.sha256(method.encode() + b" " + path_qs.encode() + b"\n" + canonical).hexdigest()


class SimCore:
    """Per-app simulator state shared by the middleware and the control routes."""

    def __init__(self, profile: VendorProfile, backend: Backend, seed: int) -> None:
        self.profile = profile
        self.backend = backend
        self.seed = seed
        self.faults = Faults()
        self.readings = Readings(profile.name, profile.readings)
        self.records: deque[RecordedRequest] = deque(maxlen=MAX_RECORDS)
        self.rng = random.Random(seed)
        self.idempotency = IdempotencyStore()
        self._accepted: deque[float] = deque()

    def reset(self) -> None:
        """Forget records, faults and idempotency keys, reseed, and reset the vendor data."""
        self.faults = Faults()
        self.records.clear()
        self.rng = random.Random(self.seed)
        self.idempotency.clear()
        self._accepted.clear()
        self.backend.reset()

    def rate_limit_wait(self) -> float:
        """Seconds until a request fits the ``max_rps`` budget; 0 means accepted (and counted) now."""
        now = time.monotonic()
        while self._accepted and now - self._accepted[0] >= 1.0:
            self._accepted.popleft()
        if len(self._accepted) >= self.faults.max_rps:
            return max(0.001, self._accepted[0] + 1.0 - now)
        self._accepted.append(now)
        return 0.0


SIM_CORE = web.AppKey("sim_core", SimCore)
"""Where every simulator app keeps its :class:`SimCore` (records, faults, backend)."""


def json_response(body: Any, *, status: int = 200) -> web.Response:
    """``web.json_response`` through orjson, for the routes a benchmark drives thousands of times a
    second: the simulator must not be what a benchmark of the bridge measures."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def status_code_name(status: int) -> str:
    """``429`` -> ``too_many_requests``: a machine-readable code for a bare status."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return f"http_{status}"


def vendor_error(
    request: web.Request, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """An error response in the format of the vendor whose app handles ``request``."""
    body = request.app[SIM_CORE].profile.render_error(request, status, code, message)
    return web.json_response(body, status=status, headers=headers)


def _retry_after(seconds: float) -> dict[str, str]:
    # RFC 9110 wants whole seconds; fractions are kept (rounded up to ms) so tests can retry quickly.
    whole = math.ceil(seconds)
    value = str(whole) if math.isclose(whole, seconds) else f"{math.ceil(seconds * 1000) / 1000:g}"
    return {"Retry-After": value}


def _status_error(request: web.Request, status: int, retry_after: float) -> web.Response:
    headers = _retry_after(retry_after) if status in (429, 503) else None
    return vendor_error(request, status, status_code_name(status), "simulated failure", headers=headers)


class _ConnectionDropped(Exception):
    """Raised by the fault stage so the middleware closes the connection without answering."""


async def _apply_faults(request: web.Request, core: SimCore) -> web.Response | None:
    """The fault response for this request, or ``None`` to serve it normally."""
    faults = core.faults
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.drop_rate > 0 and core.rng.random() < faults.drop_rate:
        raise _ConnectionDropped
    if faults.down:
        headers = _retry_after(faults.retry_after)
        return vendor_error(request, 503, "service_unavailable", "simulated outage", headers=headers)
    if faults.fail_next:
        return _status_error(request, faults.fail_next.pop(0), faults.retry_after)
    if faults.rate_limit_next > 0:
        faults.rate_limit_next -= 1
        return _status_error(request, 429, faults.retry_after)
    if faults.max_rps > 0:
        wait = core.rate_limit_wait()
        if wait > 0:
            return _status_error(request, 429, wait)
    if faults.error_rate > 0 and core.rng.random() < faults.error_rate:
        return _status_error(request, faults.error_status, faults.retry_after)
    return None


async def _serve(request: web.Request, handler: Handler, core: SimCore) -> web.StreamResponse:
    """Faults, then auth, then the handler (through the idempotency store when a key is given)."""
    fault = await _apply_faults(request, core)
    if fault is not None:
        return fault
    if request.path not in core.profile.public_paths:
        problem = core.profile.authorize(request)
        if problem is not None:
            return vendor_error(request, 401, "unauthorized", problem)
    # A vendor whose reading ``idempotency`` is ``ignored`` treats the header as absent.
    honoured = core.readings.current.get("idempotency") != "ignored"
    if honoured and request.method in MUTATING_METHODS and IDEMPOTENCY_HEADER in request.headers:
        return await core.idempotency.run(request, handler)
    return await handler(request)


async def _read_body(request: web.Request) -> Any:
    """The body as JSON if it parses, else as text, ``None`` when empty (aiohttp caches it for the handler)."""
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


@web.middleware
async def sim_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every API request with its final status; apply faults, auth and idempotency."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    core = request.app[SIM_CORE]
    record = RecordedRequest(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        headers=dict(request.headers),
        body=None,
        status=0,
        at=time.time(),
    )
    core.records.append(record)
    try:
        record.body = await _read_body(request)
        response = await _serve(request, handler, core)
    except asyncio.CancelledError:
        raise  # the client went away; the record keeps status 0
    except _ConnectionDropped:
        if request.transport is not None:
            request.transport.close()
        # Never reaches the client: the transport is closed, which the client sees as a disconnect.
        return web.Response(status=HTTPStatus.SERVICE_UNAVAILABLE)
    except web.HTTPException as exc:
        # Router 404/405, body too large, ...: answered in the vendor's error format like real errors.
        response = vendor_error(request, exc.status, status_code_name(exc.status), exc.reason)
    except BaseException:
        record.status = 500
        raise
    record.status = response.status
    return response


def bearer_authorizer(token: str) -> Authorizer:
    """Accept exactly ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}"

    def authorize(request: web.Request) -> str | None:
        header = request.headers.get("Authorization")
        if header is None:
            return "missing Authorization header"
        return None if header == expected else "invalid bearer token"

    return authorize


def control_error(message: str, status: int = 400) -> web.Response:
    """Error answer of a control route (these are not vendor routes, so one plain format)."""
    return web.json_response({"error": message}, status=status)


async def read_json(request: web.Request) -> Any:
    """The JSON body, or ``ValueError`` when it is missing or does not parse."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError("body must be JSON") from exc


async def _list_requests(request: web.Request) -> web.Response:
    core = request.app[SIM_CORE]
    prefix = request.query.get("path", "")
    method = request.query.get("method", "").upper()
    selected = [
        asdict(record)
        for record in core.records
        if record.path.startswith(prefix) and (not method or record.method == method)
    ]
    return web.json_response(selected)


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(asdict(request.app[SIM_CORE].faults))


async def _set_faults(request: web.Request) -> web.Response:
    core = request.app[SIM_CORE]
    try:
        changes = await read_json(request)
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object of fault fields")
        core.faults.update(changes)
    except ValueError as exc:
        return control_error(str(exc))
    return web.json_response(asdict(core.faults))


async def _get_readings(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_CORE].readings.current)


async def _set_readings(request: web.Request) -> web.Response:
    core = request.app[SIM_CORE]
    try:
        changes = await read_json(request)
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object: question -> answer")
        core.readings.update(changes)
    except ValueError as exc:
        return control_error(str(exc))
    return web.json_response(core.readings.current)


async def _reset(request: web.Request) -> web.Response:
    core = request.app[SIM_CORE]
    core.reset()
    return web.json_response(core.backend.summary())


async def _state(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_CORE].backend.summary())


def create_sim_app(profile: VendorProfile, backend: Backend, *, seed: int) -> web.Application:
    """A new simulator app with the shared middleware and control routes; the caller adds vendor routes."""
    app = web.Application(middlewares=[sim_middleware], client_max_size=MAX_BODY_BYTES)
    app[SIM_CORE] = SimCore(profile, backend, seed)
    app.router.add_get(CONTROL_PREFIX + "requests", _list_requests)
    app.router.add_get(CONTROL_PREFIX + "faults", _get_faults)
    app.router.add_post(CONTROL_PREFIX + "faults", _set_faults)
    app.router.add_get(CONTROL_PREFIX + "readings", _get_readings)
    app.router.add_post(CONTROL_PREFIX + "readings", _set_readings)
    app.router.add_post(CONTROL_PREFIX + "reset", _reset)
    app.router.add_get(CONTROL_PREFIX + "state", _state)
    return app
