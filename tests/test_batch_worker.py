"""The worker runs a claim's delivery jobs as one batch: each event's outcome is its own, and the
batch's closing script leaves the queue exactly as arq's own bookkeeping would."""

from __future__ import annotations

import redis.asyncio as aioredis

from bridge.events import Envelope
from bridge.simulators import Simulators
from bridge.store import EventStore
from config.settings import Settings
from tests.conftest import run_worker_burst
from tests.test_delivery import event_record, set_faults, sim_requests


def _event(event_id: str, topic: str) -> Envelope:
    payload = {"id": event_id, "topic": topic, "data": {"email": f"{event_id}@example.com"}}
    return Envelope(id=event_id, source="magnews", type=topic, occurred_at="2025-11-14T13:00:00.000Z", payload=payload)


async def test_one_batch_records_each_outcome_and_settles_every_job(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    store = EventStore(redis, retention_seconds=3600)
    events = [_event(f"ok-{n}", "contacts/delete") for n in range(30)]
    events += [_event("quiet", "contacts/update"), _event("gone", "contacts/delete"), _event("new", "contacts/create")]
    await store.ingest(events)
    await redis.delete("mb:event:gone")  # expired between queueing and delivery
    base = simulators.endpoints.magicbell_base_url
    await set_faults(base, fail_next=[503])  # the first broadcast sent fails once, then succeeds

    # No cron jobs: arq keeps a cron job's in-progress key after it runs and counts it as a job, so a
    # burst that crossed a minute would leave a key and count one more.
    worker = await run_worker_burst(settings, cron_jobs=[])

    assert await store.get("gone") is None
    statuses = {event.id: (await event_record(redis, event.id))["status"] for event in events if event.id != "gone"}
    assert statuses.pop("quiet") == "ignored"
    assert set(statuses.values()) == {"delivered"}, statuses
    sent = await sim_requests(base, "/broadcasts")
    assert [request["status"] for request in sent].count(503) == 1
    assert len({request["headers"]["Idempotency-Key"] for request in sent if request["status"] == 201}) == 31
    retried = next(request for request in sent if request["status"] == 503)["headers"]["Idempotency-Key"]
    assert [request["status"] for request in sent if request["headers"]["Idempotency-Key"] == retried] == [503, 201]
    # Nothing left behind: no job, claim, try count or pending entry; each job counted once.
    for pattern in ("arq:job:*", "arq:in-progress:*", "arq:retry:*"):
        assert await redis.keys(pattern) == [], pattern
    assert await redis.zcard("arq:queue") == 0 and await redis.zcard("mb:pending") == 0
    assert worker.jobs_complete == len(events)
    assert await redis.hget("mb:stats", "events_finished|status=delivered") == b"31"
