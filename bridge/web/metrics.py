"""``GET /metrics``: this process's own series, then the queue's, read from Redis at scrape time.

Two kinds of series, told apart by the ``scope`` label, and aggregated differently over processes:

- **This process** (no ``scope``; ``bridge.process_metrics``): the HTTP requests it answered, the
  webhooks it refused and its ingest latency, the events it stored (``received``, ``duplicates``),
  ``magbridge_build_info``, ``process_*`` and ``python_*``; under ``magbridge run``, the worker's
  series too. Each process counts only its own work: ``sum`` them over processes. Workers serve
  theirs on their probe port (``workers.probes``). ``magbridge_redis_up`` is this process's view
  too: whether this scrape could read Redis.
- **The queue** (``scope="queue"``): read from Redis in one pipeline per scrape by every web process:
  events pending and due, the oldest due event's wait, dead letters held, events indexed, a worker
  heartbeat, the Magnify credentials, replays (``keys.STATS``) and the bridge-wide gauges
  (``keys.GAUGES``: destinations paused, the last Magnify poll). Every replica reads the same Redis
  and shows the same values: take ``max`` over replicas (or scrape one), never ``sum``. Workers do
  not export them, so a worker's scrape never adds a copy.

Every replica exports the queue rather than one designated for it: no replica of a Deployment is
special, any may be down, and the label makes the series easy to select and hard to ``sum`` by
mistake.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from bridge.process_metrics import ProcessMetrics
from bridge.store import keys
from bridge.store.reads import EventReader
from bridge.store.records import text
from bridge.store.stats import GAUGES_KEY, STATS_KEY
from bridge.web.health import MAGNIFY_AUTH_KEY, WORKER_HEARTBEAT_KEY
from bridge.web.problems import PROBLEM_NAME
from bridge.web.state import READER, REDIS
from config.errors import StoreUnavailable

__all__ = [
    "QUEUE_SCOPE",
    "WEB_METRICS",
    "QueueCollector",
    "Snapshot",
    "WebMetrics",
    "metrics_endpoint",
    "metrics_middleware",
    "read_snapshot",
]

QUEUE_SCOPE = {"scope": "queue"}
_PREFIX = "magbridge_"
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Routes whose refusals count as rejected events, and the source they stand for.
_INGEST_ROUTES = {"/webhooks/magnews": "magnews"}
# The counters of keys.STATS exported (the ingest totals there are this process's `received` too).
_SHARED_COUNTERS = ("replays",)

_HELP = {
    "redis_up": "1 when Redis answered this process's scrape; 0 (and no queue series) otherwise.",
    "queue_depth": f"Events waiting for delivery, due or deferred for a retry ({keys.PENDING_INDEX}).",
    "queue_due": "Events waiting for delivery that are due now.",
    "queue_oldest_age_seconds": "How long the oldest due event has waited; 0 when none is due.",
    "dead_letter_events": f"Events held as dead letters now ({keys.DEAD_INDEX}), kept until replayed.",
    "events_indexed": f"Events in the listing index ({keys.EVENTS_INDEX}), within the retention window.",
    "worker_up": f"1 while any worker's heartbeat is fresh ({keys.WORKER_HEARTBEAT}), else 0.",
    "magnify_auth_ok": f"1 when the last Magnify token request succeeded ({keys.MAGNIFY_AUTH}), else 0.",
    "replays": "Events queued again by a replay (admin API or magbridge replay), by mode and whether forced.",
    "destination_breaker_open": "1 while the destination's circuit breaker is open or half-open (after "
    "BREAKER_FAILURES transient failures in a row, until a request succeeds), else 0.",
    "destination_paused": "1 while the destination is paused because it refused our credentials, 0 once resumed.",
    "magnify_lag_seconds": "How far the Magnify poll was behind at its last cycle (newest metric ingested).",
    "magnify_motions_unlisted": "Magnify motions the /motions listing could not reach (from <= 100), last poll.",
}


def _labels(raw: str) -> dict[str, str] | None:
    """``a=1,b=2`` as a dict; ``None`` when a label name is not one Prometheus accepts or is ours."""
    labels: dict[str, str] = {}
    for pair in filter(None, raw.split(",")):
        name, _, value = pair.partition("=")
        if not _NAME.match(name) or name.startswith("__") or name in ("le", "scope"):
            return None
        labels[name] = value
    return labels


def _number(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _fields(raw: dict[str, str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A ``keys.STATS`` or ``keys.GAUGES`` hash as ``name -> [(labels, value)]``; unusable fields skipped."""
    series: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for raw_field, raw_value in raw.items():
        name, _, raw_labels = raw_field.partition("|")
        labels, number = _labels(raw_labels), _number(raw_value)
        if _NAME.match(name) and labels is not None and number is not None:
            series[name].append((labels, number))
    return series


@dataclass(slots=True)
class Snapshot:
    """What one scrape read from Redis, in one pipeline."""

    counters: dict[str, str] = field(default_factory=dict)
    gauges: dict[str, str] = field(default_factory=dict)
    queue_depth: int = 0
    queue_due: int = 0
    oldest_due_ms: int | None = None
    dead_letters: int = 0
    events_indexed: int = 0
    worker_up: bool = False
    magnify_auth_ok: bool | None = None
    breakers_open: dict[str, bool] = field(default_factory=dict)
    now_ms: int = 0


async def read_snapshot(redis: aioredis.Redis, store: EventReader) -> Snapshot | None:
    """Everything the queue series need, or ``None`` when Redis does not answer."""
    now = int(time.time() * 1000)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(STATS_KEY)
            pipe.hgetall(GAUGES_KEY)
            pipe.zcard(keys.PENDING_INDEX)
            pipe.zcount(keys.PENDING_INDEX, "-inf", now)
            pipe.zrange(keys.PENDING_INDEX, 0, 0, withscores=True)
            pipe.exists(WORKER_HEARTBEAT_KEY)
            pipe.get(MAGNIFY_AUTH_KEY)
            for destination in keys.DESTINATIONS:
                pipe.hget(keys.gate(destination)[2], "open_until")
            stats, gauges, depth, due, oldest, beat, auth, *breakers = await pipe.execute()
        events_indexed, dead_letters = await store.index_sizes()
    except (RedisError, StoreUnavailable, OSError):
        return None
    magnify_ok: bool | None = None
    if auth is not None:
        try:
            magnify_ok = json.loads(auth).get("ok") is True
        except (ValueError, AttributeError):
            magnify_ok = False
    return Snapshot(
        counters={text(k): text(v) for k, v in stats.items()},
        gauges={text(k): text(v) for k, v in gauges.items()},
        queue_depth=int(depth),
        queue_due=int(due),
        oldest_due_ms=int(oldest[0][1]) if oldest else None,
        dead_letters=dead_letters,
        events_indexed=events_indexed,
        worker_up=bool(beat),
        magnify_auth_ok=magnify_ok,
        breakers_open={
            destination: int(text(raw) or 0) > 0 for destination, raw in zip(keys.DESTINATIONS, breakers, strict=True)
        },
        now_ms=now,
    )


def _family(name: str, kind: str, samples: Iterable[tuple[dict[str, str], float]]) -> Metric:
    family = Metric(_PREFIX + name, _HELP.get(name, f"Bridge-wide {kind} {name}."), kind)
    suffix = "_total" if kind == "counter" else ""
    for labels, value in samples:
        family.add_sample(_PREFIX + name + suffix, {**labels, **QUEUE_SCOPE}, value)
    return family


def queue_families(snapshot: Snapshot) -> Iterator[Metric]:
    """The ``scope="queue"`` series of one snapshot."""
    oldest = snapshot.oldest_due_ms
    values: dict[str, float] = {
        "queue_depth": snapshot.queue_depth,
        "queue_due": snapshot.queue_due,
        "queue_oldest_age_seconds": max(0.0, (snapshot.now_ms - oldest) / 1000) if oldest is not None else 0.0,
        "dead_letter_events": snapshot.dead_letters,
        "events_indexed": snapshot.events_indexed,
        "worker_up": int(snapshot.worker_up),
    }
    if snapshot.magnify_auth_ok is not None:
        values["magnify_auth_ok"] = int(snapshot.magnify_auth_ok)
    for name, value in values.items():
        yield _family(name, "gauge", [({}, value)])
    yield _family(
        "destination_breaker_open",
        "gauge",
        [({"destination": name}, int(is_open)) for name, is_open in snapshot.breakers_open.items()],
    )
    counters = _fields(snapshot.counters)
    for name in _SHARED_COUNTERS:
        yield _family(name, "counter", counters.get(name, []))
    for name, samples in sorted(_fields(snapshot.gauges).items()):
        if name not in values:
            yield _family(name, "gauge", samples)


class QueueCollector(Collector):
    """Yields ``magbridge_redis_up`` and the queue series of the snapshot the scrape read just before."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # gauges from keys.GAUGES are only known at scrape time

    def collect(self) -> Iterable[Metric]:
        snapshot = self.snapshot
        up = Metric(_PREFIX + "redis_up", _HELP["redis_up"], "gauge")
        up.add_sample(_PREFIX + "redis_up", {}, 1 if snapshot else 0)
        yield up
        if snapshot is not None:
            yield from queue_families(snapshot)


class WebMetrics:
    """The web app's metrics: the process's own registry and the queue's, rendered one after the other."""

    def __init__(self, process: ProcessMetrics):
        self.process = process
        self.series = process.web
        self.queue = QueueCollector()
        self._queue_registry = CollectorRegistry(auto_describe=False)
        self._queue_registry.register(self.queue)

    def render(self, snapshot: Snapshot | None) -> bytes:
        # No await between setting the snapshot and rendering: concurrent scrapes cannot mix.
        self.queue.snapshot = snapshot
        return self.process.render() + generate_latest(self._queue_registry)

    def record(self, request: web.Request, status: int, response: web.StreamResponse | None, seconds: float) -> None:
        route = request.match_info.route.resource
        path = route.canonical if route is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"  # clients choose methods
        self.series.http_requests.labels(path, method, str(status)).inc()
        source = _INGEST_ROUTES.get(path)
        if source is None:
            return
        if status == 200:
            self.series.ingest_latency.observe(seconds)
        elif status >= 400:
            name = response.get(PROBLEM_NAME) if response is not None else None
            reason = re.sub(r"[^a-z0-9]+", "_", (name or f"status {status}").lower()).strip("_")
            self.series.rejected.labels(source, reason).inc()


WEB_METRICS = web.AppKey("web_metrics", WebMetrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside the problem middleware: sees the final status, problem documents included."""
    started = time.perf_counter()
    status, response = 500, None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[WEB_METRICS].record(request, status, response, time.perf_counter() - started)


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[WEB_METRICS]
    snapshot = await read_snapshot(request.app[REDIS], request.app[READER])
    body = metrics.render(snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
