"""This process's own Prometheus series: one registry per process, each figure counted where it happens.

Every process (``magbridge web``, each ``magbridge worker``, ``magbridge run``) keeps its counters and
histograms in memory, in the ``CollectorRegistry`` of one ``ProcessMetrics``, and serves them on its
own ``/metrics``: the web service on its port, a worker on its probe port (``workers.probes``). A
series counts what *this* process did, so ``sum`` over processes is the bridge's total; a restart
starts it at zero again, which ``rate`` and ``increase`` take in their stride.

The series read from Redis at scrape time (the queue, dead letters held, ...) are not here: they are
the same whichever process reads them, and only the web service exports them
(``bridge.web.metrics``, labelled ``scope="queue"``).

Parts, each registered once on the registry, when the process first asks for it:

- ``ingest``  always: the events this process stored (the web receiver; a worker's Magnify poller)
- ``web``     the HTTP service: requests, refusals, ingest latency
- ``worker``  delivery jobs, the sweeper and the Magnify poller

``magbridge_build_info``, ``process_*`` and ``python_*`` come with every registry. Label values come
from small known sets (destinations, outcomes, sources, bounded event types), never from an event.
"""

from __future__ import annotations

import functools
import platform
from collections import Counter as Tally
from collections.abc import Iterable
from importlib.metadata import version as distribution_version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from bridge.events import Envelope
from bridge.labels import event_type_label
from bridge.version import version

__all__ = ["LATENCY_BUCKETS", "IngestSeries", "ProcessMetrics", "WebSeries", "WorkerSeries"]

_PREFIX = "magbridge_"
# Seconds: from a fast local delivery to a retried one (also a Magnify poll's duration).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# Seconds: a webhook request from arrival to its acknowledgement.
_INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class IngestSeries:
    """Events stored by this process, new or duplicates, by source and bounded type."""

    def __init__(self, registry: CollectorRegistry):
        self.received = Counter(
            _PREFIX + "received",
            "Events this process stored for the first time, by source and type (unknown types: other).",
            ["source", "type"],
            registry=registry,
        )
        self.duplicates = Counter(
            _PREFIX + "duplicates",
            "Events this process acknowledged as duplicates of one already stored, by source and type.",
            ["source", "type"],
            registry=registry,
        )

    def count(self, envelopes: Iterable[Envelope], new: Iterable[bool]) -> None:
        """Count one store call's answer: ``new`` holds, per envelope, whether it was stored anew."""
        tally = Tally((envelope.source, envelope.type, fresh) for envelope, fresh in zip(envelopes, new, strict=True))
        labelled: Tally[tuple[str, str, bool]] = Tally()
        for (source, event_type, fresh), count in tally.items():
            labelled[source, event_type_label(source, event_type), fresh] += count
        for (source, label, fresh), count in labelled.items():
            (self.received if fresh else self.duplicates).labels(source, label).inc(count)


class WebSeries:
    """The HTTP service's own figures."""

    def __init__(self, registry: CollectorRegistry):
        self.http_requests = Counter(
            _PREFIX + "http_requests",
            "HTTP requests this web process answered, by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.rejected = Counter(
            _PREFIX + "rejected",
            "Webhook requests this web process refused, by source and reason; nothing of them was stored.",
            ["source", "reason"],
            registry=registry,
        )
        self.ingest_latency = Histogram(
            _PREFIX + "ingest_latency_seconds",
            "From a webhook request's arrival to its acknowledgement, every event durably stored.",
            buckets=_INGEST_BUCKETS,
            registry=registry,
        )


class WorkerSeries:
    """A worker's own figures: its delivery jobs, sweeps and Magnify polls."""

    def __init__(self, registry: CollectorRegistry):
        def counter(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(_PREFIX + name, help_text, labels, registry=registry)

        self.deliveries = counter(
            "deliveries",
            "Delivery attempts by destination and outcome (delivered, transient, permanent, invalid, refused; "
            "unmatched, superseded: a Magnews merge final without a request).",
            ("destination", "outcome"),
        )
        self.retries = counter("retries", "Event retries scheduled, by the destination that failed.", ("destination",))
        self.dead_letters = counter("dead_letters", "Actions that failed for good, by destination.", ("destination",))
        self.events_finished = counter("events_finished", "Events that reached a final status, by status.", ("status",))
        self.delivery_latency = Histogram(
            _PREFIX + "delivery_latency_seconds",
            "From receipt of the event to the destination's acknowledgement, by destination.",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.swept = counter("swept", "Pending events without a job that the sweeper handed to a new job.")
        self.magnews_lookups = counter(
            "magnews_lookups",
            "Magnews contacts looked up by a merge's match, by source (cache, api) and result (found, none).",
            ("source", "result"),
        )
        self.magnify_polls = counter("magnify_polls", "Magnify poll cycles by outcome.", ("outcome",))
        self.magnify_requests = counter(
            "magnify_requests", "Requests to the Magnify API by endpoint and status class.", ("endpoint", "status")
        )
        self.magnify_metrics_ingested = counter("magnify_metrics_ingested", "Magnify email metrics stored as new.")
        self.magnify_metrics_duplicate = counter("magnify_metrics_duplicate", "Magnify email metrics already stored.")
        self.magnify_metrics_skipped = counter(
            "magnify_metrics_skipped", "Magnify email metrics older than where polling starts (or a reset's mark)."
        )
        self.magnify_window_overflow = counter(
            "magnify_window_overflow", "Magnify poll windows that held more metrics than one poll reads."
        )
        self.magnify_poll_duration = Histogram(
            _PREFIX + "magnify_poll_duration_seconds",
            "Duration of one Magnify poll cycle.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class ProcessMetrics:
    """The registry of one process (of one app or worker in tests) and the series parts it uses."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Gauge(
            _PREFIX + "build_info",
            "Always 1; the labels say which magbridge, Python and arq this process runs.",
            ["version", "python", "arq"],
            registry=self.registry,
        ).labels(version(), platform.python_version(), distribution_version("arq")).set(1)
        self.ingest = IngestSeries(self.registry)

    @functools.cached_property
    def web(self) -> WebSeries:
        return WebSeries(self.registry)

    @functools.cached_property
    def worker(self) -> WorkerSeries:
        return WorkerSeries(self.registry)

    def render(self) -> bytes:
        """The Prometheus text format of every series of this registry."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value, 0 when it has none yet (``name`` in full, ``_total`` included)."""
        return self.registry.get_sample_value(name, labels) or 0.0
