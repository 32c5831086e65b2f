"""``/metrics``: values that move as events flow, the workers' series read from Redis, local series."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bridge.labels import event_type_label
from bridge.simulators import Simulators
from bridge.store.stats import Stats
from tests.support.events import magnews_event
from tests.support.redis_server import RedisServer
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import set_faults
from tests.support.workers import run_worker_burst

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(service: Service) -> Samples:
    async with service.session.get(f"{service.url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.mark.slow
async def test_metrics_move_as_events_flow(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    before = await scrape(service)
    assert value(before, "magbridge_redis_up") == 1
    assert value(before, "magbridge_queue_depth") == 0
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

    queued = await scrape(service)
    received = "magbridge_received_total"
    assert value(queued, received, source="magnews", type="contacts/delete") == 2
    assert value(queued, received, source="magnews", type="communications/msg/bounce") == 1
    assert value(queued, received, source="magnews", type="other") == 1
    assert value(queued, received) == 0, "the bare total is not exposed beside the labelled series"
    assert value(queued, "magbridge_duplicates_total", source="magnews", type="contacts/delete") == 1
    assert value(queued, "magbridge_rejected_total", source="magnews", reason="invalid_json") == 1
    assert value(queued, "magbridge_rejected_total", source="magnews", reason="unsupported_media_type") == 1
    assert value(queued, "magbridge_queue_depth") == 4
    assert value(queued, "magbridge_queue_due") == 4
    assert 0 <= value(queued, "magbridge_queue_oldest_age_seconds") < 10
    assert value(queued, "magbridge_events_indexed") == 4
    assert value(queued, "magbridge_ingest_latency_seconds_count") == 2, "two webhook requests were accepted"
    assert value(queued, "magbridge_http_requests_total", route="/webhooks/magnews", method="POST", status="200") == 2
    assert value(queued, "magbridge_worker_up") == 0
    methods = {dict(labels).get("method") for name, labels in queued if name == "magbridge_http_requests_total"}
    assert methods == {"GET", "POST", "other"}, "a method a client made up is not a label value"

    # The first two sends fail transiently; the retries deliver all three broadcasts.
    await set_faults(simulators.endpoints.magicbell_base_url, fail_next=[503, 503])
    await run_worker_burst(make_settings())
    done = await scrape(service)
    deliveries = "magbridge_deliveries_total"
    assert value(done, deliveries, destination="magicbell", outcome="transient") == 2
    assert value(done, deliveries, destination="magicbell", outcome="delivered") == 3
    assert value(done, "magbridge_retries_total", destination="magicbell") >= 1
    assert value(done, "magbridge_events_finished_total", status="delivered") == 3
    assert value(done, "magbridge_events_finished_total", status="ignored") == 1
    latency = "magbridge_delivery_latency_seconds"
    assert value(done, latency + "_count", destination="magicbell") == 3
    assert value(done, latency + "_bucket", destination="magicbell", le="+Inf") == 3
    assert 0 < value(done, latency + "_sum", destination="magicbell") < 60
    assert value(done, "magbridge_queue_depth") == 0
    assert value(done, "magbridge_queue_oldest_age_seconds") == 0
    assert value(done, "magbridge_dead_letter_events") == 0


async def test_dead_letters_are_counted_and_held(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    events = [magnews_event("x1", "contacts/delete"), magnews_event("x2", "contacts/create", email="no")]
    async with service.post_webhook(events) as response:
        assert response.status == 200
    # MagicBell refuses with a 400: a permanent failure (a 401 or 403 would pause it instead).
    await set_faults(simulators.endpoints.magicbell_base_url, error_rate=1.0, error_status=400)
    await run_worker_burst(make_settings())
    samples = await scrape(service)
    assert value(samples, "magbridge_dead_letters_total", destination="magicbell") == 2
    assert value(samples, "magbridge_deliveries_total", destination="magicbell", outcome="permanent") == 1
    assert value(samples, "magbridge_deliveries_total", destination="magicbell", outcome="invalid") == 1
    assert value(samples, "magbridge_events_finished_total", status="failed") == 2
    assert value(samples, "magbridge_dead_letter_events") == 2


async def test_any_series_a_process_writes_reaches_the_scrape(service: Service, redis: aioredis.Redis) -> None:
    """The Magnify poller's figures, and anything else written through ``Stats``, generically."""
    stats = Stats(redis)
    await stats.incr("magnify_polls", {"outcome": "ok"}, amount=3)
    await stats.incr("magnify_requests", {"endpoint": "motions", "status": "200"}, amount=5)
    await stats.incr("magnify_metrics_ingested", amount=7)
    await stats.set_gauge("magnify_lag_seconds", 12.5)
    for seconds in (0.02, 0.3, 0.3, 4000.0):
        await stats.observe("magnify_poll_duration_seconds", seconds)
    await stats.observe("custom_wait_seconds", 2.0, {"queue": "a"})  # found by the first scrape's SCAN
    await redis.set("mb:magnify:auth", '{"ok": false, "error": "invalid_client", "at": 1}')
    await redis.hset("mb:stats", mapping={"bad name|x=1": 9, "fine|bad-label=1": 9, "corrupt": "NaN"})

    samples = await scrape(service)
    assert value(samples, "magbridge_magnify_polls_total", outcome="ok") == 3
    assert value(samples, "magbridge_magnify_requests_total", endpoint="motions", status="200") == 5
    assert value(samples, "magbridge_magnify_metrics_ingested_total") == 7
    assert value(samples, "magbridge_magnify_lag_seconds") == 12.5
    duration = "magbridge_magnify_poll_duration_seconds"
    assert value(samples, duration + "_bucket", le="0.025") == 1
    assert value(samples, duration + "_bucket", le="0.25") == 1
    assert value(samples, duration + "_bucket", le="0.5") == 3, "buckets are cumulative"
    assert value(samples, duration + "_bucket", le="1800.0") == 3
    assert value(samples, duration + "_bucket", le="+Inf") == 4
    assert value(samples, duration + "_count") == 4
    assert value(samples, duration + "_sum") == pytest.approx(4000.62)
    assert value(samples, "magbridge_magnify_auth_ok") == 0
    assert value(samples, "magbridge_custom_wait_seconds_bucket", queue="a", le="2.5") == 1
    assert not {name for name in names(samples) if "bad" in name or "fine" in name or "corrupt" in name}


async def test_redis_down_still_answers_with_redis_up_zero(
    service: Service, redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        samples = await scrape(service)
    finally:
        redis_server.start()
    assert value(samples, "magbridge_redis_up") == 0
    assert "magbridge_queue_depth" not in names(samples)
    assert "process_resident_memory_bytes" in names(samples)


def test_event_type_labels_are_bounded() -> None:
    assert event_type_label("magnews", "contacts/create") == "contacts/create"
    assert event_type_label("magnews", "transactionals/msg/complaint") == "transactionals/msg/complaint"
    assert event_type_label("magnify", "magnify_send_email_open") == "magnify_send_email_open"
    assert event_type_label("magnews", "magnify_send_email_open") == "other"
    assert event_type_label("magnews", "evt-" + "x" * 100) == "other"
    assert event_type_label("elsewhere", "contacts/create") == "other"


def test_each_app_has_its_own_registry(make_settings: SettingsFactory) -> None:
    from bridge.web.app import create_app
    from bridge.web.metrics import WEB_METRICS

    first, second = create_app(make_settings()), create_app(make_settings())
    assert first[WEB_METRICS].registry is not second[WEB_METRICS].registry
    first[WEB_METRICS].ingest_latency.observe(0.1)
    assert second[WEB_METRICS].ingest_latency._sum.get() == 0  # type: ignore[attr-defined]
