"""One arq job delivers a batch of events: each event's outcome is its own, a retry becomes a
follow-up job, and nothing is left in arq's queue or our indexes when the work is done."""

from __future__ import annotations

import redis.asyncio as aioredis

from bridge.events import Envelope
from bridge.simulators import Simulators
from bridge.store.reads import EventReader
from config.settings import Settings
from tests.support.simulators import set_faults, sim_requests
from tests.support.store import event_record, ingest, queued_batches
from tests.support.workers import run_worker_burst


def _event(event_id: str, topic: str) -> Envelope:
    payload = {"id": event_id, "topic": topic, "data": {"email": f"{event_id}@example.com"}}
    return Envelope(id=event_id, source="magnews", type=topic, occurred_at="2025-11-14T13:00:00.000Z", payload=payload)


async def test_one_job_records_each_outcome_and_leaves_nothing_queued(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    events = [_event(f"ok-{n}", "contacts/delete") for n in range(30)]
    events += [_event("quiet", "contacts/update"), _event("gone", "contacts/delete"), _event("new", "contacts/create")]
    await ingest(redis, events)
    [job] = await redis.queued_jobs()  # type: ignore[attr-defined]
    assert await queued_batches(redis) == {job.job_id: [event.id for event in events]}, (
        "one job carries the whole ingest call"
    )
    await redis.delete("mb:event:gone")  # expired between queueing and delivery
    base = simulators.endpoints.magicbell_base_url
    await set_faults(base, fail_next=[503])  # the first broadcast sent fails once, then succeeds

    # No cron jobs: arq keeps a cron job's in-progress key after it runs and counts it as a job, so a
    # burst that crossed a minute would leave a key and count one more.
    worker = await run_worker_burst(settings, cron_jobs=[])

    assert await EventReader(redis).get("gone") is None
    statuses = {event.id: (await event_record(redis, event.id))["status"] for event in events if event.id != "gone"}
    assert statuses.pop("quiet") == "ignored"
    assert set(statuses.values()) == {"delivered"}, statuses
    sent = await sim_requests(base, "/broadcasts")
    assert [request["status"] for request in sent].count(503) == 1
    assert len({request["headers"]["Idempotency-Key"] for request in sent if request["status"] == 201}) == 31
    retried = next(request for request in sent if request["status"] == 503)["headers"]["Idempotency-Key"]
    assert [request["status"] for request in sent if request["headers"]["Idempotency-Key"] == retried] == [503, 201]
    # Two jobs ran: the batch and the follow-up of the one event that failed once; nothing is left.
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (2, 0, 0)
    assert await redis.queued_jobs() == []  # type: ignore[attr-defined]
    assert await redis.zcard("mb:pending") == 0
    owners = [await redis.hget(f"mb:event:{event.id}", "job") for event in events]
    assert owners == [None] * len(events), "a final event has no job"
    assert worker.ctx["metrics"].value("magbridge_events_finished_total", status="delivered") == 31
