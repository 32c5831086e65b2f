"""Seeded, deterministic motions and email metrics for the Magnify Partner API simulator.

Each recipient of a motion's email gets a realistic chain of events (processed, delivered, maybe opened
and clicked; now and then deferred, bounced, dropped, unsubscribed or reported as spam). Generated
history ends before a fixed date so the same seed always gives the same data; metrics appended later
are stamped "now", so ``occurredAt`` keeps increasing.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from bridge.events import MAGNIFY_EVENT_PREFIX, MAGNIFY_EVENT_TYPES

__all__ = ["EMAIL_EVENT_TYPES", "MOTION_STATES", "USER_IDS", "MagnifyData", "Motion", "Person"]

MOTION_STATES = ("COMPLETED", "DRAFT", "EXECUTING", "SCHEDULED", "FAILED", "ARCHIVED", "CANCELLED")
EVENT_PREFIX = MAGNIFY_EVENT_PREFIX
EMAIL_EVENT_TYPES = MAGNIFY_EVENT_TYPES
# The states of every 20 motions before shuffling: mostly running or done; drafts and scheduled motions
# have not sent anything yet, so they have no metrics.
STATE_MIX = ("EXECUTING",) * 8 + ("COMPLETED",) * 6 + ("DRAFT",) * 2 + ("SCHEDULED", "FAILED", "ARCHIVED", "CANCELLED")
STATES_WITHOUT_METRICS = frozenset({"DRAFT", "SCHEDULED"})
# Events appended at run time (single events, not chains) and their weights.
APPEND_EVENTS = (
    "processed",
    "delivered",
    "open",
    "click",
    "deferred",
    "bounce",
    "dropped",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
    "spamreport",
)
APPEND_WEIGHTS = (15, 30, 30, 15, 3, 2, 1, 1.5, 0.7, 0.3, 0.5)
HISTORY_END_MS = 1_748_736_000_000  # 2025-06-01T00:00:00Z
SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

MOTION_NAMES = (
    "Welcome Series",
    "Onboarding Campaign",
    "Trial Conversion",
    "Feature Adoption Nudge",
    "Renewal Reminder",
    "Churn Risk Outreach",
    "Expansion Play",
    "QBR Invitation",
    "NPS Follow-up",
    "Webinar Invitation",
)
ACCOUNT_NAMES = (
    "Acme Corporation",
    "Globex Industries",
    "Initech Software",
    "Umbra Analytics",
    "Northwind Traders",
    "Blue Harbor Logistics",
    "Pinecrest Health",
    "Vertex Robotics",
    "Silverline Media",
    "Redwood Financial",
    "Brightpath Learning",
    "Summit Outdoor",
)
FIRST_NAMES = ("John", "Maria", "Wei", "Aisha", "Luca", "Sofia", "Kenji", "Emma", "Omar", "Priya", "Noah", "Elena")
LAST_NAMES = ("Doe", "Rossi", "Chen", "Khan", "Bianchi", "Garcia", "Tanaka", "Smith", "Haddad", "Patel", "Novak")
USERS_PER_ACCOUNT = 8
# Every seed gives the same user ids, user_1001 to user_1096: the Magnews simulator's e-mail database
# holds contacts for some of them.
USER_IDS = tuple(f"user_{1001 + number}" for number in range(len(ACCOUNT_NAMES) * USERS_PER_ACCOUNT))
MOTION_AUTHORS = ("user_123", "user_456", "user_789")


@dataclass(frozen=True)
class Person:
    """A recipient: the user and the account it belongs to."""

    account_id: str
    account_name: str
    user_id: str
    user_name: str


@dataclass
class Motion:
    """A motion and its email metrics, kept oldest first."""

    id: str
    """Bare UUID; the API shows it as ``motion_<uuid>`` in motion objects."""
    name: str
    version: int
    created_at: int
    created_by: str
    state: str
    template_id: str
    template_version: int
    audience: list[Person]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The MotionData object."""
        return {
            "id": f"motion_{self.id}",
            "name": self.name,
            "version": self.version,
            "createdAt": self.created_at,
            "createdBy": self.created_by,
            "state": self.state,
        }

    def metric(self, person: Person, event: str, occurred_at: int) -> dict[str, Any]:
        """An EmailMetricDataPoint of this motion (``motion.version`` is a string there, as documented)."""
        return {
            "account": {"id": person.account_id, "name": person.account_name},
            "user": {"id": person.user_id, "name": person.user_name},
            "motion": {"id": self.id, "name": self.name, "version": str(self.version)},
            "emailEvent": {
                "templateId": self.template_id,
                "templateVersion": self.template_version,
                "type": EVENT_PREFIX + event,
            },
            "occurredAt": occurred_at,
        }

    def last_occurred_at(self) -> int:
        """``occurredAt`` of the newest metric, 0 if there is none."""
        return self.metrics[-1]["occurredAt"] if self.metrics else 0


def _people(rng: random.Random) -> list[Person]:
    people = []
    for account_index, account_name in enumerate(ACCOUNT_NAMES):
        account_id = f"acc_{rng.randrange(10**8, 10**9)}"
        for user_index in range(USERS_PER_ACCOUNT):
            user_id = USER_IDS[account_index * USERS_PER_ACCOUNT + user_index]
            name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            people.append(Person(account_id, account_name, user_id, name))
    return people


def _engagement(rng: random.Random) -> list[tuple[str, int]]:
    """What a recipient does after delivery: ``(event, delay ms after the previous event)``."""
    events: list[tuple[str, int]] = []
    if rng.random() < 0.55:
        events.append(("open", rng.randint(5 * MINUTE_MS, 48 * HOUR_MS)))
        if rng.random() < 0.35:
            events.append(("click", rng.randint(10 * SECOND_MS, 2 * HOUR_MS)))
    tail = rng.random()
    if tail < 0.02:
        events.append(("unsubscribe", rng.randint(MINUTE_MS, 24 * HOUR_MS)))
    elif tail < 0.03:
        events.append(("group_unsubscribe", rng.randint(MINUTE_MS, 24 * HOUR_MS)))
        if rng.random() < 0.25:
            events.append(("group_resubscribe", rng.randint(HOUR_MS, 72 * HOUR_MS)))
    elif tail < 0.035:
        events.append(("spamreport", rng.randint(MINUTE_MS, 24 * HOUR_MS)))
    return events


def _chain(rng: random.Random) -> list[tuple[str, int]]:
    """The events of one email to one recipient: ``(event, delay ms after the previous event)``."""
    events = [("processed", 0)]
    outcome = rng.random()
    if outcome < 0.02:
        return [*events, ("dropped", rng.randint(SECOND_MS, 5 * MINUTE_MS))]
    if outcome < 0.06:
        return [*events, ("bounce", rng.randint(SECOND_MS, 30 * MINUTE_MS))]
    if rng.random() < 0.05:
        events.append(("deferred", rng.randint(SECOND_MS, 10 * MINUTE_MS)))
    events.append(("delivered", rng.randint(SECOND_MS, 10 * MINUTE_MS)))
    return events + _engagement(rng)


def _strictly_increasing(metrics: list[dict[str, Any]]) -> None:
    # Two events in the same millisecond are nudged apart so every list has a strict time order.
    for previous, current in pairwise(metrics):
        if current["occurredAt"] <= previous["occurredAt"]:
            current["occurredAt"] = previous["occurredAt"] + 1


class MagnifyData:
    """All motions, newest created first, with their metrics."""

    def __init__(self, *, motions: int, metrics_per_motion: int, seed: int, size_spread: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.size_spread = size_spread
        self.people = _people(self.rng)
        states = [STATE_MIX[index % len(STATE_MIX)] for index in range(motions)]
        self.rng.shuffle(states)
        generated = [self._motion(index, state, metrics_per_motion) for index, state in enumerate(states)]
        self.motions = sorted(generated, key=lambda motion: motion.created_at, reverse=True)
        self.by_id = {motion.id: motion for motion in self.motions}

    def _motion(self, index: int, state: str, metrics_per_motion: int) -> Motion:
        rng = self.rng
        repeat, base = divmod(index, len(MOTION_NAMES))
        if self.size_spread > 0:
            # Real accounts mix small motions with a few large ones: a log-normal size with mean 1.
            spread = self.size_spread
            metrics_per_motion = max(1, round(metrics_per_motion * rng.lognormvariate(-spread * spread / 2, spread)))
        audience_size = min(len(self.people), max(3, metrics_per_motion // 4))
        motion = Motion(
            id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            name=MOTION_NAMES[base] + (f" {repeat + 1}" if repeat else ""),
            version=rng.randint(1, 3),
            created_at=HISTORY_END_MS - rng.randint(30 * DAY_MS, 365 * DAY_MS),
            created_by=rng.choice(MOTION_AUTHORS),
            state=state,
            template_id="template_" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=6)),
            template_version=rng.randint(1, 4),
            audience=rng.sample(self.people, audience_size),
        )
        if state not in STATES_WITHOUT_METRICS:
            motion.metrics = self._history(motion, metrics_per_motion)
        return motion

    def _history(self, motion: Motion, count: int) -> list[dict[str, Any]]:
        """``count`` metrics, oldest first: whole chains per recipient, the latest events cut off."""
        rng = self.rng
        first_send = motion.created_at + rng.randint(1 * DAY_MS, 3 * DAY_MS)
        metrics: list[dict[str, Any]] = []
        sends = 0
        while len(metrics) < count:
            person = motion.audience[sends % len(motion.audience)]
            sends += 1
            moment = first_send + rng.randint(0, 14 * DAY_MS)
            for event, delay in _chain(rng):
                moment += delay
                metrics.append(motion.metric(person, event, moment))
        metrics.sort(key=lambda metric: metric["occurredAt"])
        del metrics[count:]
        _strictly_increasing(metrics)
        return metrics

    def total_metrics(self) -> int:
        """Number of metrics over all motions."""
        return sum(len(motion.metrics) for motion in self.motions)

    def executing(self) -> list[Motion]:
        """Motions in state EXECUTING, the ones that produce new metrics."""
        return [motion for motion in self.motions if motion.state == "EXECUTING"]

    def create(self, count: int, *, state: str = "EXECUTING", metrics_per_motion: int = 0) -> list[Motion]:
        """``count`` new motions, created after every other one, so they list first and push the oldest
        motions of their state out of the listing window (``from`` <= 100)."""
        newest = max((motion.created_at for motion in self.motions), default=HISTORY_END_MS)
        created = []
        for offset in range(count):
            motion = self._motion(len(self.motions) + offset, state, metrics_per_motion)
            motion.created_at = newest + (offset + 1) * MINUTE_MS
            created.append(motion)
        self.motions = sorted([*self.motions, *created], key=lambda motion: motion.created_at, reverse=True)
        self.by_id = {motion.id: motion for motion in self.motions}
        return created

    def append(self, motion: Motion, count: int, now_ms: int) -> None:
        """``count`` new metrics for ``motion``, stamped ``now_ms`` (or just after its newest metric)."""
        audience = motion.audience or self.people
        for _ in range(count):
            occurred_at = max(now_ms, motion.last_occurred_at() + 1)
            event = self.rng.choices(APPEND_EVENTS, APPEND_WEIGHTS)[0]
            motion.metrics.append(motion.metric(self.rng.choice(audience), event, occurred_at))
