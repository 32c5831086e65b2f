"""Latest wins (issue item 5): an older Magnify metric never overwrites a newer one in a Magnews contact,
whatever order the metrics are ingested and delivered in: newest first, shuffled, in concurrent jobs,
by two worker processes, around a retry.

Real Redis, the real Magnews simulator and real arq workers; each test asserts the contact the
simulator stores, the order of the merges it received, and that the merges not sent are visible as
``superseded``.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis

from bridge.events import Envelope, magnify_envelope
from bridge.simulators import SIM_CORE, Simulators, run_simulators
from bridge.simulators.magnews import MAGNEWS_BACKEND, MagnewsBackend
from bridge.simulators.magnews_contacts import Contact
from bridge.store import keys
from bridge.store.ingest import EventWriter
from bridge.store.reads import EventReader
from config.errors import DeliveryDeferred, MergeSuperseded
from config.settings import Settings
from tests.support.events import magnify_metric
from tests.support.magnify import backend as magnify_backend
from tests.support.magnify import magnify_settings, open_poller
from tests.support.processes import start_process, stop_process
from tests.support.service import SettingsFactory
from tests.support.simulators import set_faults
from tests.support.store import event_record, ingest
from tests.support.waiting import statuses, wait_until
from tests.support.workers import run_worker_burst, running_worker
from workers.destinations.contact_order import ContactOrder
from workers.magnify.poller import POLLED_STATES
from workers.mapping import ContactRef

AT = 1_700_000_000_000
KINDS = ("delivered", "open", "click")
# The metric types the default rules merge into the user's contact.
MERGED = {
    f"magnify_send_email_{kind}"
    for kind in ("delivered", "open", "click", "bounce", "dropped", "unsubscribe", "group_unsubscribe", "spamreport")
}


def backend(simulators: Simulators) -> MagnewsBackend:
    return simulators.magnews_app[MAGNEWS_BACKEND]


def contact(simulators: Simulators, user: str) -> Contact:
    [found] = [c for c in backend(simulators).contacts.in_database(7) if c.fields["magnify_user_id"] == user]
    return found


def metrics(user: str, count: int, *, start: int = AT) -> list[Envelope]:
    """``count`` metrics of ``user``, oldest first, a second apart."""
    return [
        magnify_envelope(magnify_metric(f"magnify_send_email_{KINDS[n % 3]}", user=user, at=start + n * 1000))
        for n in range(count)
    ]


def merges_received(simulators: Simulators) -> list[dict[str, str]]:
    """The values of every contact merge the simulator applied (answered 200), in the order received."""
    received = []
    for record in simulators.magnews_app[SIM_CORE].records:
        if record.status != 200 or record.method != "POST":
            continue
        if record.path == "/v19/contacts/merge":
            received.append(record.body["values"])
        elif record.path == "/v19/contacts/batchmerge":
            batch = [{item["field"]: item["value"] for item in c["values"]} for c in record.body["contacts"]]
            users = [values["magnify_user_id"] for values in batch]
            assert len(users) == len(set(users)), "one batchmerge holds at most one merge per contact"
            received += batch
    return received


async def ingest_in_jobs(redis: ArqRedis, envelopes: list[Envelope], per_job: int) -> None:
    """Store ``envelopes`` as a receiver whose intake jobs take ``per_job`` events each: several jobs."""
    writer = EventWriter(redis, retention_seconds=3600, batch_size=per_job)
    assert await writer.ingest(envelopes) == [True] * len(envelopes)


async def action_statuses(redis: aioredis.Redis, envelopes: list[Envelope]) -> list[str]:
    """The status of each event's Magnews merge (an opt-out's broadcast left aside)."""
    records = [await event_record(redis, e.id) for e in envelopes]
    return [next(a["status"] for a in r["actions"] if a["destination"] == "magnews") for r in records]


def assert_latest_won(simulators: Simulators, by_user: dict[str, list[Envelope]]) -> None:
    """Each contact holds its user's newest metric, and its merges arrived oldest to newest."""
    received = merges_received(simulators)
    for user, envelopes in by_user.items():
        newest = max(envelopes, key=lambda e: e.occurred_at)
        fields = contact(simulators, user).fields
        assert (fields["magnify_last_event_at"], fields["magnify_last_event"]) == (newest.occurred_at, newest.type)
        times = [values["magnify_last_event_at"] for values in received if values["magnify_user_id"] == user]
        assert times == sorted(times) and len(times) == len(set(times)), f"{user}: merges out of order: {times}"


async def _outcomes(redis: aioredis.Redis, simulators: Simulators, envelopes: list[Envelope]) -> dict[str, int]:
    actions = await action_statuses(redis, envelopes)
    _, dead = await EventReader(redis).index_sizes()
    delivered = actions.count("delivered")
    return {
        "sent": len(envelopes),
        "delivered": delivered,
        "superseded": actions.count("superseded"),
        "dead": dead,
        # Merges the simulator applied beyond one per delivered action (a resend that took effect again).
        "duplicated": len(merges_received(simulators)) - delivered,
    }


@pytest.fixture
def concurrent(make_settings: SettingsFactory, redis: aioredis.Redis) -> Settings:
    """Small batches, several jobs at once: one user's metrics are delivered by concurrent jobs."""
    return make_settings(worker_batch_size=2, worker_max_jobs=4)


async def test_newest_first_ingestion_keeps_the_newest(
    concurrent: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    envelopes = metrics("user_42", 6)
    await ingest_in_jobs(redis, envelopes[::-1], 2)  # a newest-first listing, in three jobs
    await run_worker_burst(concurrent)

    assert_latest_won(simulators, {"user_42": envelopes})
    numbers = await _outcomes(redis, simulators, envelopes)
    print(f"newest first: {numbers}")
    assert numbers["delivered"] + numbers["superseded"] == 6 and numbers["dead"] == numbers["duplicated"] == 0
    assert numbers["superseded"] >= 3, "each job's older metric is superseded at once, not sent"
    assert await statuses(redis, [e.id for e in envelopes]) == {"delivered": 6}
    for envelope in envelopes:
        [action] = (await event_record(redis, envelope.id))["actions"]
        if action["status"] == "superseded":
            assert action["note"].startswith("superseded: event ") and action["last_error"] is None


async def test_shuffled_ingestion_of_several_users_keeps_each_ones_newest(
    concurrent: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    by_user = {f"user_{n}": metrics(f"user_{n}", 5, start=AT + n) for n in range(5)}
    envelopes = [envelope for user in by_user.values() for envelope in user]
    random.Random(5).shuffle(envelopes)
    await ingest_in_jobs(redis, envelopes, 2)  # thirteen jobs, four at a time
    await run_worker_burst(concurrent)

    assert_latest_won(simulators, by_user)
    numbers = await _outcomes(redis, simulators, envelopes)
    print(f"shuffled: {numbers}")
    assert numbers["delivered"] + numbers["superseded"] == 25 and numbers["dead"] == numbers["duplicated"] == 0
    assert numbers["delivered"] >= 5


async def test_a_newest_first_magnify_listing_leaves_each_contact_at_its_newest_metric(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    account = {"motions": 4, "metrics_per_motion": 60, "seed": 11, "order": "newest_first"}
    async with run_simulators(magnify=account) as sims:
        settings = magnify_settings(make_settings, sims, worker_batch_size=5, worker_max_jobs=4)
        async with open_poller(settings, redis) as poller:
            await poller.poll_once()
        await run_worker_burst(settings)
        motions = [motion for motion in magnify_backend(sims).data.motions if motion.state in POLLED_STATES]
        polled = [metric for motion in motions for metric in motion.metrics]
        merged = [magnify_envelope(m) for m in polled if m["emailEvent"]["type"] in MERGED]
        by_user: dict[str, list[Envelope]] = {}
        for envelope in merged:
            by_user.setdefault(envelope.payload["user"]["id"], []).append(envelope)
        assert_latest_won(sims, by_user)
        numbers = await _outcomes(redis, sims, merged)
    print(f"newest-first Magnify listing: {len(by_user)} users, {numbers}")
    assert numbers["delivered"] + numbers["superseded"] == len(merged) and numbers["duplicated"] == 0
    assert numbers["superseded"] > 0 and numbers["dead"] == 0


async def test_an_older_opt_out_still_unsubscribes_without_overwriting_the_newer_open(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    opened = magnify_envelope(magnify_metric("magnify_send_email_open", at=AT + 5000))
    opted_out = magnify_envelope(magnify_metric("magnify_send_email_unsubscribe", at=AT))
    await ingest(redis, [opened])
    await run_worker_burst(settings)
    await ingest(redis, [opted_out])
    await run_worker_burst(settings)

    fields = contact(simulators, "user_42").fields
    assert contact(simulators, "user_42").status == "unsubscribed"
    assert (fields["magnify_last_event"], fields["magnify_last_event_at"]) == (opened.type, opened.occurred_at)
    assert merges_received(simulators)[-1] == {"magnify_user_id": "user_42", "status": "unsubscribed"}
    merge = next(a for a in (await event_record(redis, opted_out.id))["actions"] if a["destination"] == "magnews")
    assert merge["status"] == "delivered"


async def test_a_retry_after_an_unknown_outcome_is_superseded_by_a_newer_merge(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    older, newer = metrics("user_42", 2)
    base = simulators.endpoints.magnews_base_url
    await set_faults(base, fail_next=[503], retry_after=1.0)  # the older merge's outcome is unknown
    async with running_worker(settings, redis):
        await ingest(redis, [older])

        async def retrying() -> bool:
            return (await statuses(redis, [older.id])) == {"retrying": 1}

        await wait_until(retrying, timeout=10, step=0.02)
        await ingest(redis, [newer])

        async def both_final() -> bool:
            return (await statuses(redis, [older.id, newer.id])) == {"delivered": 2}

        await wait_until(both_final, timeout=15, step=0.05)

    assert await action_statuses(redis, [older, newer]) == ["superseded", "delivered"]
    [action] = (await event_record(redis, older.id))["actions"]
    assert action["note"] == f"superseded: event {newer.id} is as new or newer for {', '.join(SENT)}"
    assert [a["outcome"] for a in action["attempts"]] == ["transient", "superseded"]
    assert_latest_won(simulators, {"user_42": [older, newer]})
    assert len(merges_received(simulators)) == 1  # the older merge never reached the contact


SENT = ("magnify_last_event", "magnify_last_event_at", "magnify_last_motion")


def ref(occurred_ms: int, origin: str) -> ContactRef:
    return ContactRef(7, "magnify_user_id", "magnify_user_id", "user_42", False, True, occurred_ms, origin)


async def test_concurrent_admissions_of_one_contact_let_only_the_newest_go(
    redis: aioredis.Redis, settings: Settings
) -> None:
    order = ContactOrder(redis, ttl_seconds=3600, lease_seconds=30)
    results = await asyncio.gather(
        *(order.admit(ref(at, f"e{at}"), SENT) for at in (1000, 3000, 2000)), return_exceptions=True
    )
    assert [type(result).__name__ for result in results] == ["MergeSuperseded", "Admission", "MergeSuperseded"]
    held = results[1]
    assert not isinstance(held, BaseException) and held.fields == frozenset(SENT)
    with pytest.raises(DeliveryDeferred, match="another merge of this contact is in flight") as waiting:
        await order.admit(ref(4000, "e4000"), SENT)
    assert 0 < waiting.value.retry_after <= 0.4
    await order.release(held)
    assert (await order.admit(ref(4000, "e4000"), SENT)).fields == frozenset(SENT)
    with pytest.raises(MergeSuperseded, match="event e4000"):
        await order.admit(ref(3500, "e3500"), SENT)


@pytest.mark.slow
async def test_two_worker_processes_keep_each_users_newest(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = make_settings(worker_batch_size=3, worker_max_jobs=4)
    by_user = {f"user_{n}": metrics(f"user_{n}", 8, start=AT + n) for n in range(8)}
    envelopes = [envelope for user in by_user.values() for envelope in user]
    random.Random(7).shuffle(envelopes)
    workers = [await start_process("worker", settings) for _ in range(2)]
    try:
        await wait_until(lambda: redis.exists(keys.WORKER_HEARTBEAT), timeout=30)
        for start in range(0, len(envelopes), 8):  # arriving over a while, as polls do, in jobs of 3
            await ingest_in_jobs(redis, envelopes[start : start + 8], 3)
            await asyncio.sleep(0.05)

        async def all_final() -> bool:
            return (await statuses(redis, [e.id for e in envelopes])) == {"delivered": len(envelopes)}

        await wait_until(all_final, timeout=60, step=0.1)
    finally:
        for worker in workers:
            await stop_process(worker)

    assert_latest_won(simulators, by_user)
    numbers = await _outcomes(redis, simulators, envelopes)
    print(f"two worker processes: {numbers}")
    assert numbers["delivered"] + numbers["superseded"] == 64 and numbers["dead"] == numbers["duplicated"] == 0
