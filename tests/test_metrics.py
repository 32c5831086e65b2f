"""``/metrics``: each process's own series move with its own work; the queue's, read from Redis at
scrape time, carry ``scope="queue"``. (Real processes scraped over HTTP: ``test_metrics_processes.py``.)"""

from __future__ import annotations

import platform
from importlib.metadata import version as distribution_version

import pytest
import redis.asyncio as aioredis

from bridge.labels import event_type_label
from bridge.process_metrics import ProcessMetrics
from bridge.simulators import Simulators
from bridge.store import keys
from bridge.store.stats import SharedGauges
from bridge.version import version
from config.errors import TransientDeliveryError
from tests.support.events import magnews_event
from tests.support.redis_server import RedisServer
from tests.support.scrape import Samples, names, scrape, value
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import set_faults
from tests.support.workers import run_worker_burst
from workers.destinations.limits import DestinationGate, GateLimits

QUEUE = {"scope": "queue"}


async def scrape_service(service: Service) -> Samples:
    return await scrape(service.session, f"{service.url}/metrics")


def worker_metrics(worker: object) -> ProcessMetrics:
    metrics: ProcessMetrics = worker.ctx["metrics"]  # type: ignore[attr-defined]
    return metrics


@pytest.mark.slow
async def test_metrics_move_as_events_flow(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    before = await scrape_service(service)
    assert value(before, "magbridge_redis_up") == 1
    assert value(before, "magbridge_queue_depth", **QUEUE) == 0
    assert "magbridge_received_total" not in names(before)

    batch = [
        magnews_event("m1", "contacts/delete"),
        magnews_event("m2", "contacts/delete"),
        magnews_event("m3", "communications/msg/bounce"),
        magnews_event("m4", "acme/custom-topic"),  # unknown topics count as "other"
    ]
    async with service.post_webhook(batch) as response:
        assert response.status == 200
    async with service.post_webhook(batch[:1]) as response:
        assert (await response.json())["duplicates"] == 1
    for data, content_type, status in ((b"{", "application/json", 400), (b"{}", "text/csv", 415)):
        url = f"{service.url}/webhooks/magnews"
        async with service.session.post(url, data=data, headers={"Content-Type": content_type}) as response:
            assert response.status == status

    async with service.session.request("PROPFIND", f"{service.url}/healthz") as response:
        assert response.status == 405

    queued = await scrape_service(service)
    received = "magbridge_received_total"
    assert value(queued, received, source="magnews", type="contacts/delete") == 2
    assert value(queued, received, source="magnews", type="communications/msg/bounce") == 1
    assert value(queued, received, source="magnews", type="other") == 1
    assert value(queued, "magbridge_duplicates_total", source="magnews", type="contacts/delete") == 1
    assert value(queued, "magbridge_rejected_total", source="magnews", reason="invalid_json") == 1
    assert value(queued, "magbridge_rejected_total", source="magnews", reason="unsupported_media_type") == 1
    assert value(queued, "magbridge_queue_depth", **QUEUE) == 4
    assert value(queued, "magbridge_queue_due", **QUEUE) == 4
    assert 0 <= value(queued, "magbridge_queue_oldest_age_seconds", **QUEUE) < 10
    assert value(queued, "magbridge_events_indexed", **QUEUE) == 4
    assert value(queued, "magbridge_ingest_latency_seconds_count") == 2, "two webhook requests were accepted"
    assert value(queued, "magbridge_http_requests_total", route="/webhooks/magnews", method="POST", status="200") == 2
    assert value(queued, "magbridge_worker_up", **QUEUE) == 0
    methods = {dict(labels).get("method") for name, labels in queued if name == "magbridge_http_requests_total"}
    assert methods == {"GET", "POST", "other"}, "a method a client made up is not a label value"

    # The first two sends fail transiently; the retries deliver all three broadcasts.
    await set_faults(simulators.endpoints.magicbell_base_url, fail_next=[503, 503])
    worker = worker_metrics(await run_worker_burst(make_settings()))
    done = await scrape_service(service)
    deliveries = "magbridge_deliveries_total"
    assert worker.value(deliveries, destination="magicbell", outcome="transient") == 2
    assert worker.value(deliveries, destination="magicbell", outcome="delivered") == 3
    assert worker.value("magbridge_retries_total", destination="magicbell") >= 1
    assert worker.value("magbridge_events_finished_total", status="delivered") == 3
    assert worker.value("magbridge_events_finished_total", status="ignored") == 1
    latency = "magbridge_delivery_latency_seconds"
    assert worker.value(latency + "_count", destination="magicbell") == 3
    assert worker.value(latency + "_bucket", destination="magicbell", le="+Inf") == 3
    assert 0 < worker.value(latency + "_sum", destination="magicbell") < 60
    assert deliveries not in names(done), "the web process delivers nothing: it has no delivery series"
    assert value(done, "magbridge_queue_depth", **QUEUE) == 0
    assert value(done, "magbridge_queue_oldest_age_seconds", **QUEUE) == 0
    assert value(done, "magbridge_dead_letter_events", **QUEUE) == 0
    assert await redis.hgetall(keys.STATS) == {b"received|source=magnews": b"4", b"duplicates|source=magnews": b"1"}


async def test_dead_letters_are_counted_and_held(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    events = [magnews_event("x1", "contacts/delete"), magnews_event("x2", "contacts/create", email="no")]
    async with service.post_webhook(events) as response:
        assert response.status == 200
    # MagicBell refuses with a 400: a permanent failure (a 401 or 403 would pause it instead).
    await set_faults(simulators.endpoints.magicbell_base_url, error_rate=1.0, error_status=400)
    worker = worker_metrics(await run_worker_burst(make_settings()))
    samples = await scrape_service(service)
    assert worker.value("magbridge_dead_letters_total", destination="magicbell") == 2
    assert worker.value("magbridge_deliveries_total", destination="magicbell", outcome="permanent") == 1
    assert worker.value("magbridge_deliveries_total", destination="magicbell", outcome="invalid") == 1
    assert worker.value("magbridge_events_finished_total", status="failed") == 2
    assert value(samples, "magbridge_dead_letter_events", **QUEUE) == 2


async def test_bridge_wide_gauges_and_replays_come_with_the_queue_scope(
    service: Service, redis: aioredis.Redis
) -> None:
    gauges = SharedGauges(redis)
    await gauges.set("magnify_lag_seconds", 12.5)
    await gauges.set("magnify_motions_unlisted", 3)
    await gauges.set("destination_paused", 1, {"destination": "magnews"})
    await redis.set(keys.MAGNIFY_AUTH, '{"ok": false, "error": "invalid_client", "at": 1}')
    await redis.hset(
        keys.STATS,
        mapping={
            "replays|forced=false,mode=dead_letters": 2,
            "received|source=magnews": 9,  # the store's tally: this process's own received_total counts
            "deliveries|destination=magicbell,outcome=delivered": 5,  # left by an earlier version
        },
    )
    await redis.hset(keys.GAUGES, mapping={"bad name|x=1": 9, "fine|bad-label=1": 9, "corrupt": "NaN", "s|scope=x": 1})

    samples = await scrape_service(service)
    assert value(samples, "magbridge_magnify_lag_seconds", **QUEUE) == 12.5
    assert value(samples, "magbridge_magnify_motions_unlisted", **QUEUE) == 3
    assert value(samples, "magbridge_destination_paused", destination="magnews", **QUEUE) == 1
    assert value(samples, "magbridge_magnify_auth_ok", **QUEUE) == 0
    assert value(samples, "magbridge_replays_total", mode="dead_letters", forced="false", **QUEUE) == 2
    assert "magbridge_received_total" not in names(samples), "no copy of the per-process counters from Redis"
    assert "magbridge_deliveries_total" not in names(samples)
    assert not {name for name in names(samples) if "bad" in name or "fine" in name or "corrupt" in name}
    assert "magbridge_s" not in names(samples), "a gauge may not bring its own scope"
    scoped = {name for name, labels in samples if ("scope", "queue") in labels}
    assert scoped >= {"magbridge_queue_depth", "magbridge_dead_letter_events", "magbridge_worker_up"}
    assert not scoped & {"magbridge_http_requests_total", "magbridge_build_info", "magbridge_redis_up"}


async def test_build_info_names_the_versions(service: Service) -> None:
    samples = await scrape_service(service)
    [(labels, number)] = [(dict(labels), v) for (name, labels), v in samples.items() if name == "magbridge_build_info"]
    assert number == 1
    assert labels == {"version": version(), "python": platform.python_version(), "arq": distribution_version("arq")}
    assert version() == distribution_version("magbridge")


async def test_redis_down_still_answers_with_redis_up_zero(
    service: Service, redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        samples = await scrape_service(service)
    finally:
        redis_server.start()
    assert value(samples, "magbridge_redis_up") == 0
    assert "magbridge_queue_depth" not in names(samples)
    assert "process_resident_memory_bytes" in names(samples)
    assert "magbridge_build_info" in names(samples)


def test_event_type_labels_are_bounded() -> None:
    assert event_type_label("magnews", "contacts/create") == "contacts/create"
    assert event_type_label("magnews", "transactionals/msg/complaint") == "transactionals/msg/complaint"
    assert event_type_label("magnify", "magnify_send_email_open") == "magnify_send_email_open"
    assert event_type_label("magnews", "magnify_send_email_open") == "other"
    assert event_type_label("magnews", "evt-" + "x" * 100) == "other"
    assert event_type_label("elsewhere", "contacts/create") == "other"


def test_each_app_has_its_own_registry_unless_given_one(make_settings: SettingsFactory) -> None:
    from bridge.web.app import create_app
    from bridge.web.metrics import WEB_METRICS

    first, second = create_app(make_settings()), create_app(make_settings())
    assert first[WEB_METRICS].process.registry is not second[WEB_METRICS].process.registry
    first[WEB_METRICS].series.ingest_latency.observe(0.1)
    assert second[WEB_METRICS].process.value("magbridge_ingest_latency_seconds_count") == 0
    shared = ProcessMetrics()  # magbridge run: the web app and the worker count into one registry
    assert create_app(make_settings(), metrics=shared)[WEB_METRICS].process is shared
    assert shared.worker is shared.worker, "each part is registered once"


async def test_an_open_breaker_shows_per_destination(service: Service, redis: aioredis.Redis) -> None:
    """Transient failures in a row open MagicBell's breaker (the real gate scripts); the scrape says so,
    and Magnews, untouched, stays closed."""
    limits = GateLimits(
        max_rps=0, max_concurrency=10, max_wait=0.1, breaker_failures=2, breaker_cooldown=30, holder_ttl=10
    )
    gate = DestinationGate(redis, "magicbell", limits)
    before = await scrape_service(service)
    assert value(before, "magbridge_destination_breaker_open", destination="magicbell", **QUEUE) == 0
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            async with gate.slot():
                raise TransientDeliveryError("magicbell: 503", status=503)
    after = await scrape_service(service)
    assert value(after, "magbridge_destination_breaker_open", destination="magicbell", **QUEUE) == 1
    assert value(after, "magbridge_destination_breaker_open", destination="magnews", **QUEUE) == 0
