"""``GET /metrics``: Prometheus text format, from a per-app ``CollectorRegistry``.

Two kinds of series, and where each comes from:

- **Bridge-wide** (every web replica shows the same values; aggregate with ``max``, not ``sum``):
  read from Redis at scrape time by ``SharedCollector``. Counters are every field of ``keys.STATS``,
  gauges every field of ``keys.GAUGES`` and histograms every ``keys.HIST_PREFIX + name`` hash (layout in
  ``bridge/store/stats.py``), each exposed as ``magbridge_<name>`` (counters with ``_total``) whatever
  process wrote it: the workers' deliveries, retries and dead letters, the Magnify poller's figures,
  the web's ingest counts. To these it adds the queue (events pending delivery, the age of the oldest
  due one), the dead letters and indexed events held, the worker heartbeat and Redis itself.
- **Per process** (sum them across replicas): this web process's HTTP requests, webhook
  refusals by reason and ingest latency, plus the standard ``process_*`` and ``python_*`` series.

A counter written both bare and with labels (``received`` and ``received|source=..,type=..``) is
exposed with its labelled series only: the bare one is the same count, kept for the demo.
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
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from bridge.store import keys
from bridge.store.reads import EventReader
from bridge.store.records import text
from bridge.store.stats import GAUGES_KEY, HIST_PREFIX, LATENCY_BUCKETS, STATS_KEY
from bridge.web.health import MAGNIFY_AUTH_KEY, WORKER_HEARTBEAT_KEY
from bridge.web.problems import PROBLEM_TITLE
from bridge.web.state import READER, REDIS
from config.errors import StoreUnavailable

__all__ = [
    "WEB_METRICS",
    "HistogramKeys",
    "SharedCollector",
    "Snapshot",
    "WebMetrics",
    "metrics_endpoint",
    "metrics_middleware",
    "read_snapshot",
]

_PREFIX = "magbridge_"
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Histograms written today; others are found by an occasional SCAN (see ``HistogramKeys``).
_KNOWN_HISTOGRAMS = ("delivery_latency_seconds", "magnify_poll_duration_seconds")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Routes whose refusals count as rejected events, and the source they stand for.
_INGEST_ROUTES = {"/webhooks/magnews": "magnews"}

# Help text of the series we know; anything else found in Redis is exposed with a generic one.
_HELP = {
    "received": "Events stored for the first time, by source and type (unknown types: other).",
    "duplicates": "Events acknowledged as duplicates of one already stored, by source and type.",
    "deliveries": "Delivery attempts by destination and outcome (delivered, transient, permanent, invalid).",
    "retries": "Delivery retries scheduled, by destination.",
    "dead_letters": "Actions that failed for good (dead letters), by destination.",
    "events_finished": "Events that reached a final status, by status.",
    "replays": "Events queued again by a replay, by mode and whether forced.",
    "delivery_latency_seconds": "From receipt of the event to the destination's acknowledgement.",
    "magnify_polls": "Magnify poll cycles by outcome.",
    "magnify_requests": "Requests to the Magnify API by endpoint and status.",
    "magnify_metrics_ingested": "Magnify email metrics stored as new events.",
    "magnify_metrics_duplicate": "Magnify email metrics already stored.",
    "magnify_window_overflow": "Magnify poll windows that held more metrics than one poll reads.",
    "magnify_lag_seconds": "How far the Magnify poll is behind now.",
    "magnify_motions_unlisted": "Magnify motions the /motions listing cannot reach (from <= 100), last poll.",
    "magnify_metrics_skipped": "Magnify email metrics older than where polling starts (or a reset's mark).",
    "magnify_poll_duration_seconds": "Duration of one Magnify poll cycle.",
    # Read at scrape time beside the hashes:
    "redis_up": "1 when Redis answered this scrape; 0 (and no other shared series) otherwise.",
    "queue_depth": f"Events waiting for delivery, due or deferred for a retry ({keys.PENDING_INDEX}).",
    "queue_due": "Events waiting for delivery that are due now.",
    "queue_oldest_age_seconds": "How long the oldest due event has waited; 0 when none is due.",
    "dead_letter_events": f"Events held as dead letters now ({keys.DEAD_INDEX}), kept until replayed.",
    "events_indexed": f"Events in the listing index ({keys.EVENTS_INDEX}), within the retention window.",
    "worker_up": f"1 while a worker heartbeat is fresh ({keys.WORKER_HEARTBEAT}), else 0.",
    "magnify_auth_ok": f"1 when the last Magnify token request succeeded ({keys.MAGNIFY_AUTH}), else 0.",
}


def _labels(text: str) -> dict[str, str] | None:
    """``a=1,b=2`` as a dict; ``None`` when a label name is not one Prometheus accepts."""
    labels: dict[str, str] = {}
    for pair in filter(None, text.split(",")):
        name, _, value = pair.partition("=")
        if not _NAME.match(name) or name.startswith("__") or name == "le":
            return None
        labels[name] = value
    return labels


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _series(field: str) -> tuple[str, dict[str, str]] | None:
    name, _, labels = field.partition("|")
    parsed = _labels(labels)
    return (name, parsed) if _NAME.match(name) and parsed is not None else None


def _gauge(name: str, value: float) -> Metric:
    family = Metric(_PREFIX + name, _HELP[name], "gauge")
    family.add_sample(_PREFIX + name, {}, value)
    return family


@dataclass(slots=True)
class Snapshot:
    """What one scrape read from Redis, in one pipeline."""

    counters: dict[str, str] = field(default_factory=dict)
    gauges: dict[str, str] = field(default_factory=dict)
    histograms: dict[str, dict[str, str]] = field(default_factory=dict)
    queue_depth: int = 0
    queue_due: int = 0
    oldest_due_ms: int | None = None
    dead_letters: int = 0
    events_indexed: int = 0
    worker_up: bool = False
    magnify_auth_ok: bool | None = None
    now_ms: int = 0


class HistogramKeys:
    """The ``keys.HIST_PREFIX``* keys to read. SCAN walks the whole keyspace (millions of event keys on a
    busy bridge), so it runs at most every ``rescan_seconds``; the known names are always read."""

    def __init__(self, known: Iterable[str] = _KNOWN_HISTOGRAMS, *, rescan_seconds: float = 300.0):
        self.keys = {HIST_PREFIX + name for name in known}
        self.rescan_seconds = rescan_seconds
        self._scanned_at = -math.inf

    async def current(self, redis: aioredis.Redis) -> list[str]:
        if time.monotonic() - self._scanned_at >= self.rescan_seconds:
            self.keys |= {text(key) async for key in redis.scan_iter(match=HIST_PREFIX + "*", count=1000)}
            self._scanned_at = time.monotonic()
        return sorted(self.keys)


async def read_snapshot(redis: aioredis.Redis, store: EventReader, histograms: HistogramKeys) -> Snapshot | None:
    """Everything the shared series need, or ``None`` when Redis does not answer."""
    now = int(time.time() * 1000)
    try:
        hist_keys = await histograms.current(redis)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(STATS_KEY)
            pipe.hgetall(GAUGES_KEY)
            pipe.zcard(keys.PENDING_INDEX)
            pipe.zcount(keys.PENDING_INDEX, "-inf", now)
            pipe.zrange(keys.PENDING_INDEX, 0, 0, withscores=True)
            pipe.exists(WORKER_HEARTBEAT_KEY)
            pipe.get(MAGNIFY_AUTH_KEY)
            for key in hist_keys:
                pipe.hgetall(key)
            stats, gauges, depth, due, oldest, beat, auth, *hists = await pipe.execute()
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
        histograms={
            key[len(HIST_PREFIX) :]: {text(k): text(v) for k, v in raw.items()}
            for key, raw in zip(hist_keys, hists, strict=True)
            if raw
        },
        queue_depth=int(depth),
        queue_due=int(due),
        oldest_due_ms=int(oldest[0][1]) if oldest else None,
        dead_letters=dead_letters,
        events_indexed=events_indexed,
        worker_up=bool(beat),
        magnify_auth_ok=magnify_ok,
        now_ms=now,
    )


class SharedCollector(Collector):
    """Yields the bridge-wide series of the snapshot the scrape handler read just before."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known at scrape time; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        snapshot = self.snapshot
        yield _gauge("redis_up", 1 if snapshot else 0)
        if snapshot is None:
            return
        taken: set[str] = set()
        for family in (*self._fixed(snapshot), *self._histograms(snapshot), *self._counters(snapshot)):
            taken.add(family.name)
            yield family
        yield from (family for family in self._gauges(snapshot) if family.name not in taken)

    @staticmethod
    def _fixed(snapshot: Snapshot) -> Iterator[Metric]:
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
            yield _gauge(name, value)

    @staticmethod
    def _counters(snapshot: Snapshot) -> Iterator[Metric]:
        series: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for raw_field, raw_value in snapshot.counters.items():
            parsed, number = _series(raw_field), _number(raw_value)
            if parsed is not None and number is not None:
                series[parsed[0].removesuffix("_total")].append((parsed[1], number))
        for name, samples in sorted(series.items()):
            labelled = [sample for sample in samples if sample[0]]
            family = Metric(_PREFIX + name, _HELP.get(name, f"Shared counter {name} ({keys.STATS})."), "counter")
            for labels, value in labelled or samples:
                family.add_sample(_PREFIX + name + "_total", labels, value)
            yield family

    @staticmethod
    def _gauges(snapshot: Snapshot) -> Iterator[Metric]:
        series: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for raw_field, raw_value in snapshot.gauges.items():
            parsed, number = _series(raw_field), _number(raw_value)
            if parsed is not None and number is not None:
                series[parsed[0]].append((parsed[1], number))
        for name, samples in sorted(series.items()):
            family = Metric(_PREFIX + name, _HELP.get(name, f"Shared gauge {name} ({keys.GAUGES})."), "gauge")
            for labels, value in samples:
                family.add_sample(_PREFIX + name, labels, value)
            yield family

    @staticmethod
    def _histograms(snapshot: Snapshot) -> Iterator[Metric]:
        for name, raw in sorted(snapshot.histograms.items()):
            if not _NAME.match(name):
                continue
            help_text = _HELP.get(name, f"Shared histogram {name} ({keys.HIST_PREFIX}{name}).")
            family = Metric(_PREFIX + name, help_text, "histogram")
            for labels, buckets, total in _histogram_series(raw):
                cumulative = 0.0
                for bound in sorted(set(LATENCY_BUCKETS) | {b for b in buckets if not math.isinf(b)}):
                    cumulative += buckets.get(bound, 0.0)
                    family.add_sample(_PREFIX + name + "_bucket", {**labels, "le": str(bound)}, cumulative)
                cumulative += buckets.get(math.inf, 0.0)
                # +Inf and _count from the same buckets, so they agree even mid-update.
                family.add_sample(_PREFIX + name + "_bucket", {**labels, "le": "+Inf"}, cumulative)
                family.add_sample(_PREFIX + name + "_count", labels, cumulative)
                family.add_sample(_PREFIX + name + "_sum", labels, total)
            yield family


def _histogram_series(raw: dict[str, str]) -> Iterator[tuple[dict[str, str], dict[float, float], float]]:
    """``labels|le`` (per-bucket counts), ``labels|sum`` and ``labels|count`` grouped by labels."""
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    sums: dict[str, float] = defaultdict(float)
    for raw_field, raw_value in raw.items():
        prefix, _, part = raw_field.rpartition("|")
        value, bound = _number(raw_value), _number(part)
        if value is None:
            continue
        if part == "sum":
            sums[prefix] = value
        elif bound is not None:
            buckets[prefix][bound] = value
    for prefix, counts in sorted(buckets.items()):
        labels = _labels(prefix)
        if labels is not None:
            yield labels, counts, sums[prefix]


class WebMetrics:
    """This app's registry: its own per-process series and the shared collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.http_requests = Counter(
            _PREFIX + "http_requests",
            "HTTP requests this web process answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.rejected = Counter(
            _PREFIX + "rejected",
            "Webhook requests this web process refused, by source and reason; nothing of them was stored.",
            ["source", "reason"],
            registry=self.registry,
        )
        self.ingest_latency = Histogram(
            _PREFIX + "ingest_latency_seconds",
            "From a webhook request's arrival to its acknowledgement, every event durably stored.",
            buckets=_INGEST_BUCKETS,
            registry=self.registry,
        )
        self.shared = SharedCollector()
        self.registry.register(self.shared)
        self.histogram_keys = HistogramKeys()

    def render(self, snapshot: Snapshot | None) -> bytes:
        # No await between setting the snapshot and rendering: concurrent scrapes cannot mix.
        self.shared.snapshot = snapshot
        return generate_latest(self.registry)

    def record(self, request: web.Request, status: int, response: web.StreamResponse | None, seconds: float) -> None:
        route = request.match_info.route.resource
        path = route.canonical if route is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"  # clients choose methods
        self.http_requests.labels(path, method, str(status)).inc()
        source = _INGEST_ROUTES.get(path)
        if source is None:
            return
        if status == 200:
            self.ingest_latency.observe(seconds)
        elif status >= 400:
            title = response.get(PROBLEM_TITLE) if response is not None else None
            reason = re.sub(r"[^a-z0-9]+", "_", (title or f"status {status}").lower()).strip("_")
            self.rejected.labels(source, reason).inc()


WEB_METRICS = web.AppKey("web_metrics", WebMetrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: sees the final status, problem documents included."""
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
    snapshot = await read_snapshot(request.app[REDIS], request.app[READER], metrics.histogram_keys)
    body = metrics.render(snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
