"""Replays: choose events (by id, the dead letters, or a time range), then queue each one again.

Shared by ``POST /admin/replay`` and ``magbridge replay``. A replay goes through the same rules as
any delivery: the job skips actions whose record says ``delivered`` and request keys the ledger
holds, so replaying a delivered event sends nothing. ``force`` raises the event's generation, which
gives every action a new key: each is sent once more. ``dry_run`` reports what would be queued and
writes nothing. Every replay is appended to the event's ``replays`` history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, StringConstraints, model_validator

from bridge.events import format_time
from bridge.queries import EventQuery, find_events, parse_instant
from bridge.store import EventStore, ReplayOutcome

__all__ = ["MAX_REPLAY_EVENTS", "ReplayReport", "ReplayRequest", "SelectionTooLarge", "run_replay"]

MAX_REPLAY_EVENTS = 10_000
_MAX_IDS = 1000
_MAX_SCANNED = 200_000
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


async def _select(store: EventStore, request: ReplayRequest) -> list[str]:
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
    page = await find_events(store, query, index=index, limit=MAX_REPLAY_EVENTS + 1, budget=_MAX_SCANNED)
    if len(page.events) > MAX_REPLAY_EVENTS or page.cursor is not None:
        raise SelectionTooLarge(
            f"more than {MAX_REPLAY_EVENTS} events match (or more than {_MAX_SCANNED} to look through); "
            "narrow the time range, source or type and replay in parts"
        )
    return [event.id for event in reversed(page.events)]


async def run_replay(store: EventStore, request: ReplayRequest, *, by: str) -> ReplayReport:
    """Select the events and replay each; ``by`` (``admin-api``, ``cli``) goes into their history.

    Raises ``InvalidQuery`` for a bad ``since``/``until`` and ``SelectionTooLarge``.
    """
    event_ids = await _select(store, request)
    report = ReplayReport(request.mode, request.dry_run, request.force)
    entry = {"at": format_time(datetime.now(UTC)), "mode": request.mode, "by": by}
    for event_id in event_ids:
        outcome = await store.replay(event_id, force=request.force, dry_run=request.dry_run, entry=entry)
        report.outcomes.append(outcome)
        if outcome.status == "replayed" and not request.dry_run:
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
