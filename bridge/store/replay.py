"""Replays: choose events (by id, the dead letters, or a time range), then queue each one again.

Shared by ``POST /admin/replay`` and ``magbridge replay``. A replay goes through the same rules as
any delivery: the job skips actions whose record says ``delivered`` and request keys the ledger
holds, so replaying a delivered event sends nothing. ``force`` raises the event's generation, which
gives every action a new key: each is sent once more. ``dry_run`` reports what would be queued and
writes nothing. Every replay is appended to the event's ``replays`` history.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from arq.connections import ArqRedis
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, StringConstraints, model_validator
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from bridge.events import format_time
from bridge.store import keys
from bridge.store.queries import EventQuery, find_events, parse_instant
from bridge.store.queue import deliver_job_id, enqueue_deliveries, job_exists
from bridge.store.reads import EventReader
from bridge.store.records import now_ms, text
from bridge.store.stats import series_name
from config.errors import StoreUnavailable

__all__ = ["MAX_REPLAY_EVENTS", "ReplayOutcome", "ReplayReport", "ReplayRequest", "SelectionTooLarge", "run_replay"]

MAX_REPLAY_EVENTS = 10_000
_MAX_IDS = 1000
_MAX_SCANNED = 200_000
_KEPT_REPLAYS = 50
_BATCH_TTL_MS = 2 * 86_400_000  # arq drops a replay job that no worker started within a day (its default)
_REPLAY_TRIES = 5
_EVENT_ID = re.compile(r"^[!-~]{1,200}$")  # the receiver's rule: printable ASCII without spaces
_log = structlog.get_logger("magbridge.replay")

EventId = Annotated[str, StringConstraints(pattern=_EVENT_ID.pattern)]
Instant = StrictStr | StrictInt


class SelectionTooLarge(ValueError):
    """More events match than one replay takes; the message says how to narrow it."""


class ReplayRequest(BaseModel):
    """The body of ``POST /admin/replay``: exactly one selection, and the two switches."""

    model_config = ConfigDict(extra="forbid")

    event_ids: list[EventId] | None = Field(None, min_length=1, max_length=_MAX_IDS, description="Replay these events.")
    dead_letters: StrictBool = Field(False, description="Replay every dead letter (narrowed by source and type).")
    since: Instant | None = Field(
        None, description="Received at or after: ISO 8601, epoch milliseconds, or a span ago such as 2h."
    )
    until: Instant | None = Field(None, description="Received at or before; same forms as since. Default: now.")
    source: str | None = Field(None, min_length=1, max_length=50, description="Only events from this source.")
    type: str | None = Field(
        None, min_length=1, max_length=200, description="Only events of this type, or a glob such as */msg/bounce."
    )
    dry_run: StrictBool = Field(False, description="Report what would be replayed; change nothing.")
    force: StrictBool = Field(False, description="Send every action again, even those already delivered.")

    @model_validator(mode="after")
    def _one_selection(self) -> ReplayRequest:
        chosen = [
            name
            for name, on in (
                ("event_ids", self.event_ids is not None),
                ("dead_letters", self.dead_letters),
                ("since/until", self.since is not None or self.until is not None),
            )
            if on
        ]
        if len(chosen) != 1:
            raise ValueError(
                "choose exactly one selection: event_ids, dead_letters: true, or a time range (since, until)"
                + (f"; got {', '.join(chosen)}" if chosen else "")
            )
        if self.event_ids is not None and (self.source is not None or self.type is not None):
            raise ValueError("source and type narrow a time range or the dead letters, not a list of ids")
        return self

    @property
    def mode(self) -> str:
        if self.event_ids is not None:
            return "event_ids"
        return "dead_letters" if self.dead_letters else "time_range"


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay did, or would do, to one event: ``status`` is ``replayed``, ``already-queued``
    (a delivery job holds it), ``not-found`` or ``busy`` (it kept changing under us)."""

    event_id: str
    status: str
    previous_status: str = ""
    reset_actions: int = 0
    generation: int = 0

    def entry(self) -> dict[str, Any]:
        """What the event's ``replays`` history keeps of this outcome."""
        return {
            "previous_status": self.previous_status,
            "generation": self.generation,
            "reset_actions": self.reset_actions,
        }


@dataclass(slots=True)
class ReplayReport:
    """What a replay did (or, with ``dry_run``, would do) to each selected event."""

    mode: str
    dry_run: bool
    force: bool
    outcomes: list[ReplayOutcome] = field(default_factory=list)

    def ids(self, status: str) -> list[str]:
        return [outcome.event_id for outcome in self.outcomes if outcome.status == status]

    def as_dict(self) -> dict[str, Any]:
        replayed = [outcome for outcome in self.outcomes if outcome.status == "replayed"]
        return {
            "mode": self.mode,
            "dry_run": self.dry_run,
            "force": self.force,
            "replayed": [outcome.event_id for outcome in replayed],
            "not_found": self.ids("not-found"),
            "already_queued": self.ids("already-queued"),
            "busy": self.ids("busy"),
            "events": [{"id": outcome.event_id, **outcome.entry()} for outcome in replayed],
        }


async def _select(reader: EventReader, request: ReplayRequest) -> list[str]:
    """The ids to replay, oldest first, so that they are delivered in the order they came."""
    if request.event_ids is not None:
        return list(dict.fromkeys(request.event_ids))
    if request.dead_letters:
        query = EventQuery(source=request.source, type=request.type)
        index = "dead"
    else:
        query = EventQuery(
            source=request.source,
            type=request.type,
            since_ms=None if request.since is None else parse_instant(request.since, "since"),
            until_ms=None if request.until is None else parse_instant(request.until, "until"),
        )
        index = "events"
    page = await find_events(reader, query, index=index, limit=MAX_REPLAY_EVENTS + 1, budget=_MAX_SCANNED)
    if len(page.events) > MAX_REPLAY_EVENTS or page.cursor is not None:
        raise SelectionTooLarge(
            f"more than {MAX_REPLAY_EVENTS} events match (or more than {_MAX_SCANNED} to look through); "
            "narrow the time range, source or type and replay in parts"
        )
    return [event.id for event in reversed(page.events)]


async def run_replay(redis: ArqRedis, request: ReplayRequest, *, by: str, batch_size: int) -> ReplayReport:
    """Select the events and replay each; ``by`` (``admin-api``, ``cli``) goes into their history.

    Replayed events are queued in jobs of up to ``batch_size``. Raises ``InvalidQuery`` for a bad
    ``since``/``until``, ``SelectionTooLarge`` and ``StoreUnavailable``.
    """
    event_ids = await _select(EventReader(redis), request)
    report = ReplayReport(request.mode, request.dry_run, request.force)
    entry = {"at": format_time(datetime.now(UTC)), "mode": request.mode, "by": by}
    salt = f"replay:{uuid.uuid4().hex}"
    queued: list[str] = []  # replayed, in jobs of ``batch_size``: job k has queued[k * batch_size:][:batch_size]
    try:
        for event_id in event_ids:
            job_id = deliver_job_id([], f"{salt}:{len(queued) // batch_size}")
            outcome = await _replay_one(redis, event_id, request, entry, job_id)
            report.outcomes.append(outcome)
            if outcome.status != "replayed" or request.dry_run:
                continue
            _log.info(
                "event replayed",
                event_id=event_id,
                mode=request.mode,
                forced=request.force,
                previous_status=outcome.previous_status,
                reset_actions=outcome.reset_actions,
                generation=outcome.generation,
                by=by,
            )
            queued.append(event_id)
            if len(queued) % batch_size == 0:
                await enqueue_deliveries(redis, [job_id])
        if len(queued) % batch_size:
            await enqueue_deliveries(redis, [deliver_job_id([], f"{salt}:{len(queued) // batch_size}")])
    except RedisError as exc:  # replayed events not yet queued wait for the sweeper
        raise StoreUnavailable(f"redis: {exc}") from exc
    _log.info(
        "replay dry run" if request.dry_run else "replay done",
        mode=request.mode,
        forced=request.force,
        selected=len(event_ids),
        replayed=len(report.ids("replayed")),
        not_found=len(report.ids("not-found")),
        already_queued=len(report.ids("already-queued")),
        by=by,
    )
    return report


async def _replay_one(
    redis: ArqRedis, event_id: str, request: ReplayRequest, entry: dict[str, Any], job_id: str
) -> ReplayOutcome:
    """Hand one event to ``job_id`` atomically (optimistic ``WATCH``), unless a job holds it already.

    Without ``force``, dead and unmatched actions go back to ``pending`` with a fresh retry budget,
    and delivered (and superseded) ones stay so (the job skips them). With ``force``, the generation goes up, so every
    action gets a new key and is sent once more. The event leaves the dead letters (the job puts
    it back if it fails again) and ``entry``, completed, is appended to its ``replays``.
    """
    watched = (keys.event(event_id), keys.actions(event_id))
    async with redis.pipeline(transaction=True) as pipe:
        for _ in range(_REPLAY_TRIES):
            try:
                await pipe.watch(*watched)
                outcome, reset, replays = await _plan(redis, pipe, event_id, force=request.force)
                if request.dry_run or outcome.status != "replayed":
                    await pipe.reset()  # type: ignore[no-untyped-call]
                    return outcome
                pipe.multi()  # type: ignore[no-untyped-call]
                history = [*replays, {**entry, "force": request.force, **outcome.entry()}]
                _write(pipe, outcome, request.force, reset, history, job_id)
                await pipe.execute()
                return outcome
            except WatchError:
                continue
    return ReplayOutcome(event_id, "busy")


async def _plan(
    redis: ArqRedis, pipe: Any, event_id: str, *, force: bool
) -> tuple[ReplayOutcome, dict[str, dict[str, Any]], list[dict[str, Any]]]:
    status, generation, replays, job = (
        text(value) for value in await pipe.hmget(keys.event(event_id), ["status", "generation", "replays", "job"])
    )
    if not status:
        return ReplayOutcome(event_id, "not-found"), {}, []
    current = int(generation or 0)
    if job and await job_exists(redis, job):
        return ReplayOutcome(event_id, "already-queued", status, 0, current), {}, []
    reset: dict[str, dict[str, Any]] = {}
    if not force:
        for key, raw in (await pipe.hgetall(keys.actions(event_id))).items():
            record = json.loads(raw)
            # An unmatched merge is tried again too: its contact may exist now.
            if record.get("status") in ("dead", "unmatched"):
                record["status"] = "pending"
                if "failures" in record:
                    record["failures"] = 0
                reset[text(key)] = record
    outcome = ReplayOutcome(event_id, "replayed", status, len(reset), current + 1 if force else current)
    history: list[dict[str, Any]] = json.loads(replays or "[]")
    return outcome, reset, history[-(_KEPT_REPLAYS - 1) :]


def _write(
    pipe: Pipeline,
    outcome: ReplayOutcome,
    force: bool,
    reset: dict[str, dict[str, Any]],
    replays: list[dict[str, Any]],
    job_id: str,
) -> None:
    event_id, stamp = outcome.event_id, now_ms()
    for key, record in reset.items():
        pipe.hset(keys.actions(event_id), key, json.dumps(record, separators=(",", ":")))
    if force:
        pipe.hincrby(keys.event(event_id), "generation", 1)
    pipe.hset(
        keys.event(event_id),
        mapping={
            "replays": json.dumps(replays, separators=(",", ":")),
            "job": job_id,
            "status": "queued",
            "updated_at": stamp,
            "tries": 0,
        },
    )
    # A replayed event is pending again: its record must not lapse mid-run (a delivered one's retention
    # may be nearly over); settling it sets the expiry of whatever it comes to.
    pipe.persist(keys.event(event_id))
    pipe.persist(keys.actions(event_id))
    pipe.zrem(keys.DEAD_INDEX, event_id)
    pipe.zadd(keys.PENDING_INDEX, {event_id: stamp})
    pipe.rpush(keys.batch(job_id), event_id)
    pipe.pexpire(keys.batch(job_id), _BATCH_TTL_MS)
    labels = {"mode": str(replays[-1].get("mode", "")), "forced": "true" if force else "false"}
    pipe.hincrby(keys.STATS, series_name("replays", labels), 1)
