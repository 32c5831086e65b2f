"""Each Lua script called directly against a real Redis: what it returns and what it writes, as its
header comment documents (KEYS, ARGV, return value). Key names come from ``bridge.store.keys``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.store import keys
from bridge.store.scripts import script

NOW = 1_700_000_000_000
RETENTION_MS = 3_600_000  # the dedupe window
RECORD_RETENTION_MS = 300_000  # a delivered record's, shorter


async def put(redis: aioredis.Redis, key: str, **values: Any) -> None:
    await redis.hset(key, mapping=values)  # type: ignore[misc]


async def fields(redis: aioredis.Redis, key: str) -> dict[str, str]:
    raw = await redis.hgetall(key)  # type: ignore[misc]
    return {name.decode(): value.decode() for name, value in raw.items()}


async def members(redis: aioredis.Redis, key: str) -> dict[str, float]:
    return {member.decode(): score for member, score in await redis.zrange(key, 0, -1, withscores=True)}


async def counter(redis: aioredis.Redis, series: str) -> int:
    return int(await redis.hget(keys.STATS, series) or 0)  # type: ignore[misc]


async def redis_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def flat_dict(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


# ---------------------------------------------------------------------------------------- ingest.lua

INGEST_KEYS = [keys.EVENTS_INDEX, keys.PENDING_INDEX, keys.STATS, keys.INTAKE]


def ingest_args(now: int, *ids: str, most: int = 100, job_prefix: str = "job-a", source: str = "magnews") -> list[Any]:
    """ARGV for ingest.lua: ``contacts/delete`` events of ``source``."""
    args: list[Any] = [now, RETENTION_MS, keys.EVENT_PREFIX, keys.BATCH_PREFIX, most, job_prefix]
    args += [keys.SEEN_PREFIX, RECORD_RETENTION_MS]
    for event_id in ids:
        payload = orjson.dumps({"id": event_id}).decode()
        args += [event_id, source, "contacts/delete", "2025-11-14T13:00:00.000Z", payload]
    return args


async def batch(redis: aioredis.Redis, job_id: str) -> list[str]:
    return [member.decode() for member in await redis.lrange(keys.batch(job_id), 0, -1)]  # type: ignore[misc]


async def test_ingest_stores_indexes_and_counts_new_events_in_the_intake_job(redis: aioredis.Redis) -> None:
    ingest = script(redis, "bridge.store", "ingest.lua")
    assert await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "e1", "e2")) == [[1, 1], [b"job-a:1"]]

    assert await fields(redis, keys.event("e1")) == {
        "source": "magnews",
        "type": "contacts/delete",
        "occurred_at": "2025-11-14T13:00:00.000Z",
        "payload": '{"id":"e1"}',
        "received_at": str(NOW),
        "updated_at": str(NOW),
        "status": "queued",
        "generation": "0",
        "runs": "0",
        "tries": "0",
        "job": "job-a:1",
    }
    assert RETENTION_MS - 10_000 < await redis.pttl(keys.event("e1")) <= RETENTION_MS
    assert await redis.get(keys.INTAKE) == b"job-a:1"
    assert await batch(redis, "job-a:1") == ["e1", "e2"]
    assert RETENTION_MS - 10_000 < await redis.pttl(keys.batch("job-a:1")) <= RETENTION_MS
    assert await members(redis, keys.EVENTS_INDEX) == {"e1": NOW, "e2": NOW}
    assert await members(redis, keys.PENDING_INDEX) == {"e1": NOW, "e2": NOW}
    assert await fields(redis, keys.STATS) == {"received|source=magnews": "2"}, "tallied by source only"


async def test_ingest_fills_the_intake_job_up_to_the_most_events_then_opens_the_next(redis: aioredis.Redis) -> None:
    ingest = script(redis, "bridge.store", "ingest.lua")
    args = ingest_args(NOW, "e1", "e2", "e3", "e4", "e5", most=2, job_prefix="a")
    assert await ingest(keys=INGEST_KEYS, args=args) == [[1] * 5, [b"a:1", b"a:2", b"a:3"]]
    assert [await batch(redis, job) for job in ("a:1", "a:2", "a:3")] == [["e1", "e2"], ["e3", "e4"], ["e5"]]
    assert (await fields(redis, keys.event("e3")))["job"] == "a:2"

    # The next call (another prefix) fills the open job before it opens one of its own.
    args = ingest_args(NOW, "e6", "e7", most=2, job_prefix="b")
    assert await ingest(keys=INGEST_KEYS, args=args) == [[1, 1], [b"a:3", b"b:1"]]
    assert await batch(redis, "a:3") == ["e5", "e6"]
    assert await batch(redis, "b:1") == ["e7"]
    assert await redis.get(keys.INTAKE) == b"b:1"

    # An intake job that a worker began is closed (begin.lua deletes the intake key): a new one opens.
    await redis.delete(keys.INTAKE)
    assert await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "e8", most=2, job_prefix="c")) == [[1], [b"c:1"]]
    assert await batch(redis, "b:1") == ["e7"]


async def test_ingest_answers_a_duplicate_with_its_job_while_no_run_started(redis: aioredis.Redis) -> None:
    ingest = script(redis, "bridge.store", "ingest.lua")
    await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "queued", "running", "final", "jobless"))
    await redis.hset(keys.event("running"), "status", "delivering")  # type: ignore[misc]
    await redis.hset(keys.event("final"), "status", "delivered")  # type: ignore[misc]
    await redis.hdel(keys.event("final"), "job")  # type: ignore[misc]
    await redis.hdel(keys.event("jobless"), "job")  # type: ignore[misc]
    before = await fields(redis, keys.event("queued"))

    later = NOW + 5_000
    args = ingest_args(later, "queued", "running", "final", "jobless", job_prefix="job-b")
    assert await ingest(keys=INGEST_KEYS, args=args) == [[b"job-a:1", 0, 0, 0], []], "no job took a new event"
    assert await fields(redis, keys.event("queued")) == before, "a duplicate changes nothing stored"
    assert await batch(redis, "job-a:1") == ["queued", "running", "final", "jobless"]

    args = ingest_args(later, "queued", "new", job_prefix="job-b")
    assert await ingest(keys=INGEST_KEYS, args=args) == [[b"job-a:1", 1], [b"job-a:1"]]
    assert await members(redis, keys.EVENTS_INDEX) == {
        "queued": NOW,
        "running": NOW,
        "final": NOW,
        "jobless": NOW,
        "new": later,
    }
    assert await counter(redis, "received|source=magnews") == 5
    assert await counter(redis, "duplicates|source=magnews") == 5


async def test_ingest_tallies_new_events_and_duplicates_by_source(redis: aioredis.Redis) -> None:
    ingest = script(redis, "bridge.store", "ingest.lua")
    await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "n1", "n2"))
    await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "f1", "n1", source="magnify"))
    await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "f1", "f1", "f2", source="magnify"))
    assert await fields(redis, keys.STATS) == {
        "received|source=magnews": "2",
        "received|source=magnify": "2",
        "duplicates|source=magnify": "3",  # n1 exists (whatever source it came from), f1 twice
    }


async def test_ingest_trims_the_listing_index_to_the_record_retention(redis: aioredis.Redis) -> None:
    ingest = script(redis, "bridge.store", "ingest.lua")
    await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "e1"))
    kept = NOW - RECORD_RETENTION_MS + 1
    await redis.zadd(keys.EVENTS_INDEX, {"expired": NOW - RECORD_RETENTION_MS, "kept": kept})
    await redis.zadd(keys.PENDING_INDEX, {"old-pending": 1})
    assert await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "e1")) == [[b"job-a:1"], []]
    assert await members(redis, keys.EVENTS_INDEX) == {"kept": kept, "e1": NOW}, (
        "a call with only duplicates trims too; the boundary itself is past retention"
    )
    assert await redis.zscore(keys.PENDING_INDEX, "old-pending") == 1, "the pending index is not trimmed"


async def test_ingest_writes_a_dedupe_marker_for_the_window_and_the_record_until_final(
    redis: aioredis.Redis,
) -> None:
    ingest = script(redis, "bridge.store", "ingest.lua")
    await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "e1"))
    assert await redis.get(keys.seen("e1")) == str(NOW).encode(), "the marker holds the receipt time"
    for key in (keys.seen("e1"), keys.event("e1")):
        assert RETENTION_MS - 10_000 < await redis.pttl(key) <= RETENTION_MS, key


async def test_ingest_answers_a_duplicate_by_its_marker_after_the_record_expired(redis: aioredis.Redis) -> None:
    ingest = script(redis, "bridge.store", "ingest.lua")
    await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "e1"))
    await redis.delete(keys.event("e1"))  # the record's retention ended; the marker's window did not
    assert await ingest(keys=INGEST_KEYS, args=ingest_args(NOW + 1, "e1", job_prefix="job-b")) == [[0], []]
    assert await redis.exists(keys.event("e1")) == 0, "a duplicate stores nothing"
    assert await counter(redis, "duplicates|source=magnews") == 1
    await redis.delete(keys.seen("e1"))  # past the window too: the id is new again
    assert await ingest(keys=INGEST_KEYS, args=ingest_args(NOW + 2, "e1")) == [[1], [b"job-a:1"]], "the open intake"


async def test_ingest_answers_a_duplicate_by_a_record_without_a_marker(redis: aioredis.Redis) -> None:
    # A record stored before the markers existed (an upgrade), or a dead letter kept past its marker.
    ingest = script(redis, "bridge.store", "ingest.lua")
    await put(redis, keys.event("old"), status="delivered", source="magnews")
    assert await ingest(keys=INGEST_KEYS, args=ingest_args(NOW, "old")) == [[0], []]
    assert await fields(redis, keys.event("old")) == {"status": "delivered", "source": "magnews"}, "untouched"


# ---------------------------------------------------------------------------------------- assign.lua


async def test_assign_hands_over_only_events_whose_job_is_the_one_found_gone(redis: aioredis.Redis) -> None:
    assign = script(redis, "workers", "assign.lua")
    for event_id, job in (("lost", "job-old"), ("taken", "job-other"), ("ownerless", None), ("owned", "job-x")):
        mapping = {"status": "delivering", "updated_at": 1} | ({"job": job} if job else {})
        await put(redis, keys.event(event_id), **mapping)
        await redis.zadd(keys.PENDING_INDEX, {event_id: 1})
    await redis.zadd(keys.PENDING_INDEX, {"expired": 1})  # its hash is gone

    args: list[Any] = [NOW, RETENTION_MS, keys.EVENT_PREFIX, keys.BATCH_PREFIX]
    args += ["lost", "job-old", "job-new"]
    args += ["taken", "job-old", "job-new"]  # another job took it over meanwhile
    args += ["ownerless", "", "job-new"]  # '' for none: matches an event without a job
    args += ["owned", "", "job-new"]  # found without a job, but it has one now
    args += ["expired", "job-old", "job-new"]
    assert await assign(keys=[keys.PENDING_INDEX], args=args) == [1, 0, 1, 0, -1]

    handed = {"status": "queued", "updated_at": str(NOW), "job": "job-new"}
    assert await fields(redis, keys.event("lost")) == handed
    assert await fields(redis, keys.event("ownerless")) == handed
    assert await fields(redis, keys.event("taken")) == {"status": "delivering", "updated_at": "1", "job": "job-other"}
    assert (await fields(redis, keys.event("owned")))["job"] == "job-x"
    assert await batch(redis, "job-new") == ["lost", "ownerless"], "the events handed over join the new job's batch"
    assert RETENTION_MS - 10_000 < await redis.pttl(keys.batch("job-new")) <= RETENTION_MS
    assert await members(redis, keys.PENDING_INDEX) == {"taken": 1, "owned": 1, "lost": NOW, "ownerless": NOW}
    assert await redis.exists(keys.event("expired")) == 0, "nothing is written for an expired event"


# ---------------------------------------------------------------------------------------- begin.lua


def begin_args(now: int, job_id: str) -> list[Any]:
    return [now, keys.EVENT_PREFIX, keys.ACTIONS_PREFIX, job_id, keys.batch(job_id)]


async def test_begin_closes_the_intake_and_starts_only_the_runs_of_events_the_job_owns(redis: aioredis.Redis) -> None:
    begin = script(redis, "workers", "begin.lua")
    await put(redis, keys.event("mine"), status="queued", job="job-a", runs=0, tries=2)
    await put(redis, keys.actions("mine"), **{"magicbell:0": '{"status":"retrying"}'})
    await put(redis, keys.event("theirs"), status="queued", job="job-b", runs=0, tries=0)
    await put(redis, keys.event("final"), status="delivered", runs=1, tries=1)
    await redis.rpush(keys.batch("job-a"), "mine", "theirs", "final", "gone")  # type: ignore[misc]
    await redis.set(keys.INTAKE, "job-a")

    ids, [mine, theirs, final, gone] = await begin(keys=[keys.INTAKE], args=begin_args(NOW, "job-a"))

    assert ids == [b"mine", b"theirs", b"final", b"gone"], "the job's batch, in order"
    assert (theirs, final, gone) == (1, 1, 0), "1: another job owns it or it is final; 0: it is gone"
    event, actions = flat_dict(mine[0]), flat_dict(mine[1])
    assert event == {"status": "delivering", "job": "job-a", "runs": "1", "tries": "3", "updated_at": str(NOW)}
    assert actions == {"magicbell:0": '{"status":"retrying"}'}
    assert await fields(redis, keys.event("mine")) == event
    assert await fields(redis, keys.event("theirs")) == {"status": "queued", "job": "job-b", "runs": "0", "tries": "0"}
    assert await fields(redis, keys.event("final")) == {"status": "delivered", "runs": "1", "tries": "1"}
    assert await redis.exists(keys.event("gone"), keys.INTAKE) == 0, "the intake is closed; nothing written for gone"
    assert await batch(redis, "job-a") == ["mine", "theirs", "final", "gone"], "a job run again reads the same batch"

    ids, [again, *_] = await begin(keys=[keys.INTAKE], args=begin_args(NOW + 1, "job-a"))
    assert flat_dict(again[0])["runs"] == "2" and flat_dict(again[0])["tries"] == "4"


async def test_begin_leaves_another_jobs_intake_open(redis: aioredis.Redis) -> None:
    begin = script(redis, "workers", "begin.lua")
    await redis.set(keys.INTAKE, "job-b")
    assert await begin(keys=[keys.INTAKE], args=begin_args(NOW, "job-a")) == [[], []], "an empty batch"
    assert await redis.get(keys.INTAKE) == b"job-b"


# ---------------------------------------------------------------------------------------- settle.lua

SETTLE_KEYS = [keys.PENDING_INDEX, keys.DEAD_INDEX]
LEDGER_TTL = 600
Run = tuple[str, str, str, str, int, str, dict[str, str]]


def settle_args(
    runs: list[Run], ledger: Sequence[tuple[str, str]] = (), *, finished: str = "job-a", record_ledger: int = 0
) -> list[Any]:
    """ARGV for settle.lua; a run is (id, status, error, outcome, due ms, next job, action records);
    ``finished``: the job whose batch goes ('' to keep it); the first ``record_ledger`` ledger entries
    keep the record retention, the others the ledger TTL."""
    args: list[Any] = [NOW, RETENTION_MS, LEDGER_TTL, keys.EVENT_PREFIX, keys.ACTIONS_PREFIX, keys.BATCH_PREFIX]
    args += [keys.batch(finished) if finished else "", len(ledger), RECORD_RETENTION_MS]
    for number, (key, entry) in enumerate(ledger):
        args += [key, entry, "record" if number < record_ledger else "window"]
    for event_id, status, error, outcome, due, job, actions in runs:
        args += [event_id, status, error, outcome, due, job, len(actions)]
        for action_key, record in actions.items():
            args += [action_key, record]
    return args


async def running(redis: aioredis.Redis, event_id: str, *, ttl_ms: int | None = RETENTION_MS) -> None:
    """An event in its run: owned by job-a (in its batch), pending, with one action record."""
    await put(redis, keys.event(event_id), status="delivering", job="job-a", runs=1)
    await put(redis, keys.actions(event_id), **{"magicbell:0": "{}"})
    if ttl_ms is not None:
        await redis.pexpire(keys.event(event_id), ttl_ms)
        await redis.pexpire(keys.actions(event_id), ttl_ms)
    await redis.zadd(keys.PENDING_INDEX, {event_id: 1})
    await redis.rpush(keys.batch("job-a"), event_id)  # type: ignore[misc]


async def test_settle_done_delivered_expires_with_the_record_retention_and_writes_the_ledger(
    redis: aioredis.Redis,
) -> None:
    settle = script(redis, "workers", "settle.lua")
    await running(redis, "ok", ttl_ms=None)
    await redis.zadd(keys.DEAD_INDEX, {"ok": 5})  # a dead letter replayed, now delivered
    ledger = [(keys.ledger("req-1"), '{"status":201}'), (keys.ledger("req-2"), '{"status":200}')]
    run: Run = ("ok", "delivered", "", "done", 0, "", {"magicbell:0": '{"status":"delivered"}'})

    assert await settle(keys=SETTLE_KEYS, args=settle_args([run], ledger, record_ledger=1)) == 1

    assert await fields(redis, keys.event("ok")) == {
        "status": "delivered",
        "updated_at": str(NOW),
        "error": "",
        "runs": "1",
    }, "a final event has no job"
    assert await fields(redis, keys.actions("ok")) == {"magicbell:0": '{"status":"delivered"}'}
    for key in (keys.event("ok"), keys.actions("ok")):
        assert RECORD_RETENTION_MS - 10_000 < await redis.pttl(key) <= RECORD_RETENTION_MS, key
    assert await redis.zscore(keys.PENDING_INDEX, "ok") is None
    assert await redis.zscore(keys.DEAD_INDEX, "ok") is None
    for key, entry in ledger:
        assert await redis.get(key) == entry.encode()
    assert RECORD_RETENTION_MS - 10_000 < await redis.pttl(ledger[0][0]) <= RECORD_RETENTION_MS, "delivered now"
    assert LEDGER_TTL - 10 < await redis.ttl(ledger[1][0]) <= LEDGER_TTL, "the window: a retry may read it late"
    assert await redis.exists(keys.batch("job-a")) == 0, "the finished job's batch goes"


async def test_settle_done_failed_is_a_dead_letter_kept_until_replayed(redis: aioredis.Redis) -> None:
    settle = script(redis, "workers", "settle.lua")
    await running(redis, "bad")
    run: Run = ("bad", "failed", "magicbell: HTTP 400", "done", 0, "", {"magicbell:0": '{"status":"dead"}'})

    assert await settle(keys=SETTLE_KEYS, args=settle_args([run])) == 1

    event = await fields(redis, keys.event("bad"))
    assert (event["status"], event["error"], "job" in event) == ("failed", "magicbell: HTTP 400", False)
    assert await redis.pttl(keys.event("bad")) == -1, "PERSIST: no expiry"
    assert await redis.pttl(keys.actions("bad")) == -1
    assert await members(redis, keys.DEAD_INDEX) == {"bad": NOW}
    assert await redis.zscore(keys.PENDING_INDEX, "bad") is None


async def test_settle_retry_appends_the_event_to_the_next_jobs_batch_due_at_its_time(redis: aioredis.Redis) -> None:
    settle = script(redis, "workers", "settle.lua")
    await running(redis, "later", ttl_ms=60_000)
    await redis.persist(keys.actions("later"))
    await redis.rpush(keys.batch("job-next"), "other")  # type: ignore[misc]
    due = NOW + 30_000
    run: Run = ("later", "retrying", "", "retry", due, "job-next", {"magicbell:0": '{"status":"retrying"}'})

    assert await settle(keys=SETTLE_KEYS, args=settle_args([run])) == 1

    assert await fields(redis, keys.event("later")) == {
        "status": "retrying",
        "updated_at": str(NOW),
        "job": "job-next",
        "runs": "1",
    }
    assert await members(redis, keys.PENDING_INDEX) == {"later": due}
    assert await batch(redis, "job-next") == ["other", "later"]
    assert RETENTION_MS - 10_000 < await redis.pttl(keys.batch("job-next")) <= RETENTION_MS
    assert 0 < await redis.pttl(keys.event("later")) <= 60_000, "the event keeps its expiry"
    assert RETENTION_MS - 10_000 < await redis.pttl(keys.actions("later")) <= RETENTION_MS
    assert await redis.exists(keys.batch("job-a")) == 0
    assert await redis.zcard(keys.DEAD_INDEX) == 0
    assert await redis.hgetall(keys.STATS) == {}  # type: ignore[misc]


async def test_settle_again_keeps_the_job_and_its_batch_and_gone_only_leaves_the_pending_index(
    redis: aioredis.Redis,
) -> None:
    settle = script(redis, "workers", "settle.lua")
    await running(redis, "cut")
    await redis.zadd(keys.PENDING_INDEX, {"expired": 7})
    runs: list[Run] = [
        ("cut", "queued", "", "again", 0, "", {}),  # interrupted: the same job runs it again
        ("expired", "missing", "", "gone", 0, "", {}),
    ]

    assert await settle(keys=SETTLE_KEYS, args=settle_args(runs, finished="")) == 1

    event = await fields(redis, keys.event("cut"))
    assert (event["status"], event["updated_at"], event["job"]) == ("queued", str(NOW), "job-a")
    assert await fields(redis, keys.actions("cut")) == {"magicbell:0": "{}"}
    assert await batch(redis, "job-a") == ["cut"], "'' keeps the batch: the job runs again"
    assert await members(redis, keys.PENDING_INDEX) == {"cut": 1}, "again: still due; gone: out of the index"
    assert await redis.exists(keys.event("expired"), keys.actions("expired")) == 0, "nothing written for it"


# ------------------------------------------------------------------------------------------ page.lua


async def page(redis: aioredis.Redis, *args: Any) -> list[tuple[str, int]]:
    flat = await script(redis, "bridge.store", "page.lua")(keys=[keys.EVENTS_INDEX], args=list(args))
    return [(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]


async def test_page_walks_newest_first_with_a_cursor_that_keeps_ties_in_order(redis: aioredis.Redis) -> None:
    await redis.zadd(keys.EVENTS_INDEX, {"a": 100, "b": 200, "c": 200, "d": 200, "e": 300})

    first = await page(redis, "+inf", "-inf", 2, "", 0)
    assert first == [("e", 300), ("d", 200)]
    second = await page(redis, "+inf", "-inf", 2, "d", 200)
    assert second == [("c", 200), ("b", 200)], "ties continue after the cursor's own rank"
    assert await page(redis, "+inf", "-inf", 2, "b", 200) == [("a", 100)]
    assert await page(redis, "+inf", "-inf", 2, "a", 100) == []

    # The cursor's member is gone: its score is the boundary, exclusive.
    await redis.zrem(keys.EVENTS_INDEX, "c")
    assert await page(redis, "+inf", "-inf", 5, "c", 200) == [("a", 100)]


async def test_page_bounds_the_first_page_by_score(redis: aioredis.Redis) -> None:
    await redis.zadd(keys.EVENTS_INDEX, {"a": 100, "b": 200, "c": 200, "d": 300})
    assert await page(redis, 250, 150, 10, "", 0) == [("c", 200), ("b", 200)]
    assert await page(redis, 250, 150, 1, "", 0) == [("c", 200)]
    # Continuing from a cursor's rank does not stop at the minimum: the caller filters (EventReader).
    assert await page(redis, 250, 150, 10, "c", 200) == [("b", 200), ("a", 100)]
    assert await page(redis, 250, 150, 10, "gone", 200) == []


# ------------------------------------------------------------------------- lease_renew / lease_release


@pytest.mark.parametrize("lease", [keys.MAGNIFY_LOCK, keys.MAGNEWS_TOKEN_LOCK])
async def test_only_the_holder_renews_or_releases_a_lease(redis: aioredis.Redis, lease: str) -> None:
    renew = script(redis, "bridge.store", "lease_renew.lua")
    release = script(redis, "bridge.store", "lease_release.lua")
    await redis.set(lease, "mine", px=1000)

    assert await renew(keys=[lease], args=["theirs", 60_000]) == 0
    assert 0 < await redis.pttl(lease) <= 1000
    assert await renew(keys=[lease], args=["mine", 60_000]) == 1
    assert 50_000 < await redis.pttl(lease) <= 60_000

    assert await release(keys=[lease], args=["theirs"]) == 0
    assert await redis.get(lease) == b"mine"
    assert await release(keys=[lease], args=["mine"]) == 1
    assert await redis.exists(lease) == 0

    assert await renew(keys=[lease], args=["mine", 60_000]) == 0, "a lapsed lease is not renewed"
    assert await release(keys=[lease], args=["mine"]) == 0
    assert await redis.exists(lease) == 0


# ----------------------------------------------------------------------- gate_admit / gate_complete

RATE, HOLDERS, BREAKER, PROBE = keys.gate("magicbell")


async def admit(
    redis: aioredis.Redis,
    *tokens: str,
    interval_ms: int = 0,
    max_wait_ms: int = 1000,
    concurrency: int = 100,
    holder_ttl_ms: int = 60_000,
    cooldown_ms: int = 5000,
) -> list[tuple[int, int, str]]:
    gate_admit = script(redis, "workers.destinations", "gate_admit.lua")
    args = [interval_ms, max_wait_ms, concurrency, holder_ttl_ms, cooldown_ms, *tokens]
    rows = await gate_admit(keys=keys.gate("magicbell"), args=args)
    return [(int(admitted), int(wait), reason.decode()) for admitted, wait, reason in rows]


async def complete(
    redis: aioredis.Redis, *outcomes: tuple[str, str], threshold: int = 3, cooldown_ms: int = 5000
) -> list[int]:
    gate_complete = script(redis, "workers.destinations", "gate_complete.lua")
    args: list[Any] = [threshold, cooldown_ms]
    for token, outcome in outcomes:
        args += [token, outcome]
    return list(await gate_complete(keys=keys.gate("magicbell")[1:], args=args))


async def test_admit_reserves_rate_slots_one_interval_apart_up_to_the_longest_wait(redis: aioredis.Redis) -> None:
    before = await redis_ms(redis)
    answers = await admit(redis, "t1", "t2", "t3", "t4", "t5", interval_ms=100, max_wait_ms=250)
    after = await redis_ms(redis)
    assert answers == [(1, 0, "ok"), (1, 100, "ok"), (1, 200, "ok"), (0, 300, "rate"), (0, 300, "rate")]

    holders = await members(redis, HOLDERS)
    assert sorted(holders) == ["t1", "t2", "t3"], "a refused request holds nothing"
    now = holders["t1"] - 60_000
    assert before <= now <= after
    assert holders == {"t1": now + 60_000, "t2": now + 100 + 60_000, "t3": now + 200 + 60_000}
    assert int(await redis.get(RATE)) == now + 300, "the next free slot"
    assert 0 < await redis.pttl(RATE) <= 200 + 100 + 1000


async def test_admit_without_a_rate_limit_writes_no_rate_key(redis: aioredis.Redis) -> None:
    assert await admit(redis, "t1", "t2") == [(1, 0, "ok"), (1, 0, "ok")]
    assert await redis.exists(RATE, BREAKER, PROBE) == 0


async def test_admit_caps_concurrency_and_frees_the_slots_of_holders_that_expired(redis: aioredis.Redis) -> None:
    assert await admit(redis, "a", "b", "c", concurrency=2) == [(1, 0, "ok"), (1, 0, "ok"), (0, 10, "busy")]
    assert sorted(await members(redis, HOLDERS)) == ["a", "b"]
    assert await admit(redis, "d", concurrency=2) == [(0, 10, "busy")]
    await complete(redis, ("a", "ok"))
    assert await admit(redis, "e", concurrency=2) == [(1, 0, "ok")], "a completion frees its slot"

    # A holder's score is when it lapses: b and e held past it (a dead worker's slots) are dropped.
    await redis.zadd(HOLDERS, {"b": 1, "e": await redis_ms(redis) - 1})
    assert await admit(redis, "f", "g", "h", concurrency=2) == [(1, 0, "ok"), (1, 0, "ok"), (0, 10, "busy")]
    assert sorted(await members(redis, HOLDERS)) == ["f", "g"]


async def test_admit_defers_everything_while_the_breaker_is_open(redis: aioredis.Redis) -> None:
    open_until = await redis_ms(redis) + 10_000
    await put(redis, BREAKER, **{"failures": 3, "open_until": open_until})
    answers = await admit(redis, "t1", "t2")
    assert [(admitted, reason) for admitted, _, reason in answers] == [(0, "open"), (0, "open")]
    assert all(9_000 < wait <= 10_000 for _, wait, _ in answers), answers
    assert await redis.exists(HOLDERS, PROBE, RATE) == 0


async def test_admit_lets_one_probe_through_once_the_cooldown_passed(redis: aioredis.Redis) -> None:
    await put(redis, BREAKER, **{"failures": 3, "open_until": await redis_ms(redis) - 1})
    assert await admit(redis, "probe", "other", cooldown_ms=5000) == [(1, 0, "ok"), (0, 200, "probing")]
    assert await redis.get(PROBE) == b"probe"
    assert 0 < await redis.pttl(PROBE) <= 5000
    assert sorted(await members(redis, HOLDERS)) == ["probe"]
    assert await admit(redis, "third") == [(0, 200, "probing")], "one probe at a time"


async def test_complete_opens_the_breaker_after_the_threshold_of_failures_in_a_row(redis: aioredis.Redis) -> None:
    await redis.zadd(HOLDERS, {"t1": 1e15, "t2": 1e15, "t3": 1e15, "t4": 1e15})
    assert await complete(redis, ("t1", "fail"), ("t2", "none"), ("t3", "fail")) == [0, 0, 0]
    assert await fields(redis, BREAKER) == {"failures": "2"}, "'none' neither fails nor closes"
    assert sorted(await members(redis, HOLDERS)) == ["t4"], "every completion frees its slot"

    before = await redis_ms(redis)
    await redis.set(PROBE, "stale")
    assert await complete(redis, ("t4", "fail"), cooldown_ms=5000) == [1]
    after = await redis_ms(redis)
    breaker = await fields(redis, BREAKER)
    assert breaker["failures"] == "3"
    assert before + 5000 <= int(breaker["open_until"]) <= after + 5000
    assert await redis.exists(PROBE, HOLDERS) == 0

    # A failure while open (a probe that failed) re-opens it for another cooldown; it is not a new opening.
    await asyncio.sleep(0.01)
    assert await complete(redis, ("p", "fail"), cooldown_ms=5000) == [0]
    assert int((await fields(redis, BREAKER))["open_until"]) > int(breaker["open_until"])


async def test_complete_a_failed_half_open_probe_reopens_even_below_the_threshold(redis: aioredis.Redis) -> None:
    await put(redis, BREAKER, **{"failures": 0, "open_until": 1})
    await redis.set(PROBE, "probe")
    before = await redis_ms(redis)
    assert await complete(redis, ("probe", "fail"), threshold=3, cooldown_ms=2000) == [0]
    assert int((await fields(redis, BREAKER))["open_until"]) >= before + 2000
    assert await redis.exists(PROBE) == 0


async def test_complete_a_success_closes_the_breaker(redis: aioredis.Redis) -> None:
    await put(redis, BREAKER, **{"failures": 2, "open_until": 1})
    await redis.set(PROBE, "probe")
    await redis.zadd(HOLDERS, {"probe": 1e15})
    assert await complete(redis, ("probe", "ok")) == [0]
    assert await redis.exists(BREAKER, PROBE, HOLDERS) == 0
    assert await complete(redis, ("x", "ok")) == [0], "a success with the breaker closed changes nothing"
    assert await redis.exists(BREAKER) == 0


# ---------------------------------------------------------------------------- poll_claim / newest


async def claim(redis: aioredis.Redis, token: str, slot: int, ttl_ms: int = 30_000) -> int:
    poll_claim = script(redis, "workers.magnify", "poll_claim.lua")
    result: int = await poll_claim(keys=[keys.MAGNIFY_LOCK, keys.MAGNIFY_SLOT], args=[token, ttl_ms, slot])
    return result


async def test_poll_claim_takes_the_lock_once_per_slot(redis: aioredis.Redis) -> None:
    assert await claim(redis, "w1", 5, ttl_ms=30_000) == 1
    assert await redis.get(keys.MAGNIFY_LOCK) == b"w1"
    assert 0 < await redis.pttl(keys.MAGNIFY_LOCK) <= 30_000
    assert await redis.get(keys.MAGNIFY_SLOT) == b"5"

    assert await claim(redis, "w2", 5) == 0, "this slot was polled already"
    assert await claim(redis, "w2", 4) == 0, "so was an earlier one"
    assert await claim(redis, "w2", 6) == -1, "another poll holds the lock"
    assert await redis.get(keys.MAGNIFY_SLOT) == b"5", "a refused claim takes no slot"
    assert await redis.get(keys.MAGNIFY_LOCK) == b"w1"

    await redis.delete(keys.MAGNIFY_LOCK)
    assert await claim(redis, "w2", 6) == 1
    assert (await redis.get(keys.MAGNIFY_LOCK), await redis.get(keys.MAGNIFY_SLOT)) == (b"w2", b"6")


async def test_poll_claim_now_ignores_the_schedule_but_not_the_lock(redis: aioredis.Redis) -> None:
    await redis.set(keys.MAGNIFY_SLOT, 9)
    assert await claim(redis, "w1", -1) == 1
    assert await redis.get(keys.MAGNIFY_SLOT) == b"9", "polling now claims no slot"
    assert await claim(redis, "w2", -1) == -1
    assert await redis.get(keys.MAGNIFY_LOCK) == b"w1"


async def test_newest_keeps_the_largest_value(redis: aioredis.Redis) -> None:
    newest = script(redis, "workers.magnify", "newest.lua")
    assert await newest(keys=[keys.MAGNIFY_NEWEST_MS], args=[1000]) == 1000
    assert await newest(keys=[keys.MAGNIFY_NEWEST_MS], args=[500]) == 1000
    assert await redis.get(keys.MAGNIFY_NEWEST_MS) == b"1000"
    assert await newest(keys=[keys.MAGNIFY_NEWEST_MS], args=[1_640_995_200_000]) == 1_640_995_200_000
    assert await redis.get(keys.MAGNIFY_NEWEST_MS) == b"1640995200000"


# ---------------------------------------------------------------------- order_admit / order_complete

CONTACT = keys.magnews_order(7, "magnify_user_id", "user_1")
HOUR_MS = 3_600_000


async def order_admit(
    redis: aioredis.Redis, *merges: tuple[str, str, int, Sequence[str]], lease_ms: int = 30_000
) -> list[list[Any]]:
    """``(token, origin, occurred_ms, fields)`` per merge, all of ``CONTACT``; the answers decoded."""
    admit_script = script(redis, "workers.destinations", "order_admit.lua")
    args: list[Any] = [HOUR_MS, lease_ms]
    for token, origin, occurred, written in merges:
        args += [token, origin, occurred, len(written), *written]
    rows = await admit_script(keys=[CONTACT] * len(merges), args=args)
    return [[item.decode() if isinstance(item, bytes) else item for item in row] for row in rows]


async def order_complete(redis: aioredis.Redis, *tokens: str) -> list[int]:
    complete_script = script(redis, "workers.destinations", "order_complete.lua")
    return list(await complete_script(keys=[CONTACT] * len(tokens), args=list(tokens)))


async def test_order_admit_lets_the_newest_go_and_supersedes_what_is_older_or_as_old(redis: aioredis.Redis) -> None:
    both = ("last_event", "last_event_at")
    answers = await order_admit(redis, ("t3", "e3", 3000, both), ("t1", "e1", 1000, both), ("t3b", "e3b", 3000, both))
    assert answers == [["go", "last_event", "last_event_at"], ["superseded", "e3"], ["superseded", "e3"]]
    before = await redis_ms(redis)
    stored = await fields(redis, CONTACT)
    assert stored.pop("holder_until") and stored == {
        "holder": "t3",
        "f:last_event": "3000:e3",
        "f:last_event_at": "3000:e3",
    }
    assert HOUR_MS - 1000 < await redis.pttl(CONTACT) <= HOUR_MS, "bounded: the TTL given"
    assert int((await fields(redis, CONTACT))["holder_until"]) >= before + 30_000 - 1000


async def test_order_admit_makes_a_newer_merge_wait_for_the_one_in_flight_then_go(redis: aioredis.Redis) -> None:
    assert (await order_admit(redis, ("t1", "e1", 1000, ["a"])))[0][0] == "go"
    [[verdict, wait]] = await order_admit(redis, ("t2", "e2", 2000, ["a"]))
    assert verdict == "wait" and 29_000 < wait <= 30_000
    assert (await fields(redis, CONTACT))["f:a"] == "1000:e1", "a waiting merge raises nothing"
    assert await order_complete(redis, "t2", "t1") == [0, 1], "only the holder releases"
    assert await order_admit(redis, ("t2", "e2", 2000, ["a"])) == [["go", "a"]]
    assert await redis.hget(CONTACT, "f:a") == b"2000:e2"


async def test_order_admit_passes_a_merge_its_own_marks_and_only_its_fresh_fields(redis: aioredis.Redis) -> None:
    # The newer open wrote the engagement fields; the older opt-out still owns "status" alone.
    assert (await order_admit(redis, ("t1", "open", 2000, ["event", "event_at"])))[0][0] == "go"
    await order_complete(redis, "t1")
    assert await order_admit(redis, ("t2", "optout", 1000, ["event", "event_at", "status"])) == [["go", "status"]]
    await order_complete(redis, "t2")
    # A retry of the open (same origin, after an unknown outcome) passes its own marks.
    assert await order_admit(redis, ("t3", "open", 2000, ["event", "event_at"])) == [["go", "event", "event_at"]]
    await order_complete(redis, "t3")
    # Once a newer merge went, the retry of an older one is superseded.
    assert (await order_admit(redis, ("t4", "click", 3000, ["event"])))[0][0] == "go"
    await order_complete(redis, "t4")
    assert await order_admit(redis, ("t5", "open", 2000, ["event"])) == [["superseded", "click"]]


async def test_order_admit_takes_over_a_lapsed_lease(redis: aioredis.Redis) -> None:
    assert (await order_admit(redis, ("dead-worker", "e1", 1000, ["a"]), lease_ms=1))[0][0] == "go"
    await asyncio.sleep(0.01)
    assert await order_admit(redis, ("t2", "e2", 2000, ["a"])) == [["go", "a"]]
    assert await order_complete(redis, "dead-worker") == [0], "its lease lapsed: it holds nothing to release"
    assert await redis.hget(CONTACT, "holder") == b"t2"
