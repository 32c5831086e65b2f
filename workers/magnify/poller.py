"""The Magnify poll: an arq cron job that reads new email metrics into the event store.

**Schedule.** arq cron takes sets of seconds, while ``MAGBRIDGE_MAGNIFY_POLL_SECONDS`` (N) may be any
integer >= 1. The cron fires every g = gcd(N, 60) seconds (seconds 0, g, 2g, … of each minute, which
are wall-clock multiples of g since g divides 60) and once when a worker starts. A firing polls only
if its *slot*, ``floor(now / N)``, has not been polled yet. Every multiple of N is a firing (N is a
multiple of g), so polls start exactly every N seconds of wall-clock time whatever N is, and with
the default N = 60 the cron fires just once a minute. The slot is claimed in Redis in the same
script as the lock, so two workers never poll one slot (arq's unique cron job ids already make a
firing run once; the start-up firing is per worker).

**Lock.** ``keys.MAGNIFY_LOCK`` holds a random token, set with NX and an expiry of
``MAGBRIDGE_MAGNIFY_LOCK_SECONDS``, renewed every third of that while the poll runs (compare and
expire) and released at the end (compare and delete). A worker that dies mid-poll stops renewing, so
another may poll once the lock lapses. A due firing that finds the lock held is counted as
``magnify_polls{outcome="skipped_locked"}``; the next slot polls. A poll that loses its lease (its
process stalled past the expiry) stops at its next request. Even two overlapping polls would be
safe: each checkpoint only ever claims what its own writer stored.

**Budget.** arq cancels a job after ``MAGBRIDGE_JOB_TIMEOUT_SECONDS``; a longer timeout for this job
would lengthen every job's in-progress lock (see ``workers/worker.py``). So a cycle starts no request
later than ``job_timeout - http_timeout - 1`` seconds in, and retries do not sleep past that. The
checkpoints let the next cycle go on where this one stopped, and motions read least recently go
first, so a first read too large for one cycle spreads over several without starving any motion.
The poll is a job in the same queue as deliveries: while due deliveries are backlogged it waits its
turn, so the bridge never reads Magnify faster than it delivers (the next slot catches up).

**A cycle** lists the motions worth polling, one ``/motions`` request per state in ``POLLED_STATES``
(every state but DRAFT and SCHEDULED, which have sent nothing; finished motions stay in, because
opens and clicks arrive long after the sending), loads their checkpoints and reads them
``MAGBRIDGE_MAGNIFY_CONCURRENCY`` at a time (:mod:`workers.magnify.checkpoints`). Every metric goes
through ``EventWriter.ingest``, the webhooks' path: event id, dedupe, store and queue, atomically.

**Listing window.** ``/motions`` takes ``from`` <= 100, so a state lists at most 1100 motions (200
when the API holds to the general notes' 100-item pages, see :mod:`workers.magnify.client`); how many
it cannot reach is the gauge ``magnify_motions_unlisted``. A motion that has a checkpoint but is not
in this cycle's listing is still read: ``/motions/{id}`` (a 404 retires it; DRAFT or SCHEDULED skips
it), then its email metrics as usual. It is followed until it is *finished and quiet*: not EXECUTING,
and ``QUIET_READS`` (2) reads in a row found nothing new; then its checkpoint is marked ``retired`` and
it is not read again unless a listing shows it again. A motion the listing never showed has no
checkpoint and cannot be found: the gauge says how many motions are out of reach.

**Where polling starts** (``MAGBRIDGE_MAGNIFY_START``): a motion seen for the first time gets a
*floor*; metrics that occurred before it are passed over (counted in ``magnify_metrics_skipped``), not
ingested. ``everything``: 0. An ISO 8601 date: that instant (UTC unless it names an offset). ``now``
(the default): the time of the first poll against this Redis, recorded once in ``keys.MAGNIFY_START``
(SET NX), so workers and restarts agree and a motion created later is read whole.

Redis: ``keys.MAGNIFY_LOCK``, ``keys.MAGNIFY_SLOT`` (the last slot polled), ``keys.MAGNIFY_CHECKPOINTS``,
``keys.MAGNIFY_NEWEST_MS`` (the newest ``occurredAt`` ingested) and ``keys.MAGNIFY_AUTH`` (the latest
token attempt, for readiness), ``keys.MAGNIFY_START`` (the first poll's time, for ``now``). Figures, in
this process's series (:mod:`bridge.process_metrics`): ``magnify_polls{outcome}``,
``magnify_requests{endpoint,status}``, ``magnify_metrics_ingested``, ``magnify_metrics_duplicate``,
``magnify_metrics_skipped``, ``magnify_window_overflow``, the histogram ``magnify_poll_duration_seconds``;
the gauges ``magnify_lag_seconds`` and ``magnify_motions_unlisted`` describe the last poll, whichever
worker ran it, so they are set in ``keys.GAUGES`` (:mod:`bridge.store.stats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import redis.asyncio as aioredis
import structlog
from arq import cron
from arq.connections import ArqRedis
from arq.cron import CronJob
from redis.exceptions import RedisError

from bridge.events import Envelope
from bridge.logs import redact
from bridge.process_metrics import ProcessMetrics, WorkerSeries
from bridge.store import keys
from bridge.store.ingest import EventWriter
from bridge.store.lease import Lease
from bridge.store.scripts import script
from bridge.store.stats import SharedGauges
from config.errors import InvalidMotionId, MagnifyApiError, MagnifyAuthError, MagnifyError, StoreUnavailable
from config.settings import Settings, parse_start_ms
from workers.magnify.auth import AUTH_STATE_KEY, TokenAttempt, TokenManager
from workers.magnify.checkpoints import Budget, Checkpoint, CheckpointStore, MotionReader, MotionResult
from workers.magnify.client import MagnifyClient, MagnifyLimits, Motion

__all__ = [
    "CRON_NAME",
    "POLLED_STATES",
    "POLLER_CTX_KEY",
    "CycleReport",
    "MagnifyPoller",
    "cron_seconds",
    "magnify_cron_jobs",
    "poll_magnify",
]

POLLED_STATES = ("EXECUTING", "COMPLETED", "FAILED", "CANCELLED", "ARCHIVED")
# An unlisted motion is read by id until it is finished (not EXECUTING) and QUIET_READS reads in a
# row found nothing new; then it is retired (read again only if the listing shows it again).
QUIET_READS = 2
START_KEY = keys.MAGNIFY_START
CRON_NAME = "magnify_poll"
POLLER_CTX_KEY = "magnify_poller"
LOCK_KEY = keys.MAGNIFY_LOCK
SLOT_KEY = keys.MAGNIFY_SLOT
NEWEST_KEY = keys.MAGNIFY_NEWEST_MS

_log = structlog.get_logger("magbridge.poller")


Claim = Literal["acquired", "not_due", "locked"]


def cron_seconds(poll_seconds: int) -> set[int]:
    """The seconds of each minute the cron fires at: every ``gcd(poll_seconds, 60)``."""
    return set(range(0, 60, math.gcd(poll_seconds, 60)))


@dataclass(slots=True)
class CycleReport:
    """What one poll did (also logged as ``magnify poll finished``)."""

    outcome: str = "ok"  # ok | error | skipped_locked | not_due
    seconds: float = 0.0
    motions: int = 0
    motions_unreachable: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # by endpoint: token, motions, metrics
    ingested: int = 0
    duplicates: int = 0
    overflow: int = 0
    incomplete: int = 0  # motions the budget left for the next cycle
    failed: int = 0
    resets: int = 0
    skipped: int = 0  # metrics older than their motion's floor (MAGBRIDGE_MAGNIFY_START, a reset)
    unlisted: int = 0  # checkpointed motions out of the listing, read by id this cycle
    retired: int = 0  # unlisted motions found finished and quiet this cycle: no longer read
    newest_ms: int = 0
    error: str = ""


class _Tally:
    """Counts every request to Magnify, here (for reports) and in the process's series."""

    def __init__(self, series: WorkerSeries):
        self.counts: Counter[str] = Counter()
        self._series = series

    async def __call__(self, endpoint: str, status: str) -> None:
        self.counts[endpoint] += 1
        self._series.magnify_requests.labels(endpoint, status).inc()


class _Lease:
    """The poll lock: claimed with the slot, renewed while held, released by its holder only."""

    def __init__(self, redis: aioredis.Redis, ttl_seconds: float):
        self._token = secrets.token_hex(16)
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._claim = script(redis, __package__, "poll_claim.lua")
        self._lease = Lease(redis, LOCK_KEY)

    async def claim(self, slot: int | None) -> Claim:
        flag = await self._claim(
            keys=[LOCK_KEY, SLOT_KEY], args=[self._token, self._ttl_ms, -1 if slot is None else slot]
        )
        if int(flag) == 1:
            return "acquired"
        return "not_due" if int(flag) == 0 else "locked"

    async def keep(self, budget: Budget) -> None:
        """Renew until cancelled; if the lease is gone, stop the cycle's budget."""
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                renewed = await self._lease.renew(self._token, self._ttl_ms)
            except RedisError as exc:
                _log.warning("magnify poll lock not renewed", error=str(exc))
                renewed = False
            if not renewed:
                _log.warning("magnify poll lock lost", reason="stopping this cycle at its next request")
                budget.stopped = True
                return

    async def release(self) -> None:
        try:
            await self._lease.release(self._token)
        except RedisError as exc:
            _log.warning("magnify poll lock not released", error=str(exc), reason="it lapses by itself")


async def _publish_auth_state(redis: aioredis.Redis, attempt: TokenAttempt) -> None:
    """``keys.MAGNIFY_AUTH`` for readiness: the latest token attempt, good or bad (no expiry)."""
    state = {"ok": attempt.ok, "error": attempt.error, "at": int(time.time() * 1000)}
    try:
        await redis.set(AUTH_STATE_KEY, json.dumps(state, separators=(",", ":")))
    except RedisError as exc:
        _log.warning("magnify auth state not published", error=str(exc))


class MagnifyPoller:
    """Runs poll cycles: ``tick`` from the cron (on schedule), ``poll_once`` on demand."""

    def __init__(
        self,
        redis: aioredis.Redis,
        client: MagnifyClient,
        tally: _Tally,
        *,
        store: EventWriter,
        metrics: ProcessMetrics,
        poll_seconds: int,
        concurrency: int,
        lock_seconds: float,
        budget_seconds: float,
        states: Sequence[str] = POLLED_STATES,
        clock: Callable[[], float] = time.time,
        start: str = "everything",
    ):
        self._redis = redis
        self._start = start
        self._start_ms: int | None = None
        self.client = client
        self._tally = tally
        self._store = store
        self.metrics = metrics
        self._series = metrics.worker
        self._gauges = SharedGauges(redis)
        self._checkpoints = CheckpointStore(redis)
        self._reader = MotionReader(client, self._checkpoints, self._ingest, now_ms=lambda: int(self._clock() * 1000))
        self._newest = script(redis, __package__, "newest.lua")
        self._poll_seconds = poll_seconds
        self._concurrency = concurrency
        self._lock_seconds = lock_seconds
        self._budget_seconds = budget_seconds
        self._states = tuple(states)
        self._clock = clock

    @classmethod
    def from_settings(
        cls,
        redis: ArqRedis,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        limits: MagnifyLimits | None = None,
        states: Sequence[str] = POLLED_STATES,
        budget_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        metrics: ProcessMetrics | None = None,
    ) -> MagnifyPoller:
        """A poller with its token manager and client on ``session``; needs ``settings.magnify_enabled``.

        ``budget_seconds`` defaults to what the job timeout leaves (module docstring); ``clock`` is
        the wall clock of the schedule (tests move it); ``metrics``: the process's series (a
        worker's; a registry of its own when not given).
        """
        if settings.magnify_client_id is None or settings.magnify_client_secret is None:
            raise ValueError("Magnify polling needs MAGBRIDGE_MAGNIFY_CLIENT_ID and MAGBRIDGE_MAGNIFY_CLIENT_SECRET")
        metrics = metrics or ProcessMetrics()
        tally = _Tally(metrics.worker)

        async def on_attempt(attempt: TokenAttempt) -> None:
            await _publish_auth_state(redis, attempt)

        tokens = TokenManager(
            session,
            str(settings.magnify_token_url),
            settings.magnify_client_id,
            settings.magnify_client_secret,
            timeout=settings.http_timeout_seconds,
            on_attempt=on_attempt,
            on_request=tally,
        )
        client = MagnifyClient.from_settings(session, settings, tokens, on_request=tally, limits=limits)
        return cls(
            redis,
            client,
            tally,
            store=EventWriter(
                redis,
                retention_seconds=settings.retention_seconds,
                record_retention_seconds=settings.record_retention_seconds,
                batch_size=settings.worker_batch_size,
                series=metrics.ingest,
            ),
            metrics=metrics,
            poll_seconds=settings.magnify_poll_seconds,
            concurrency=settings.magnify_concurrency,
            lock_seconds=settings.magnify_lock_seconds,
            budget_seconds=budget_seconds or max(1.0, settings.job_timeout_seconds - settings.http_timeout_seconds - 1),
            states=states,
            clock=clock,
            start=settings.magnify_start,
        )

    async def tick(self) -> str:
        """The cron's call: poll if this slot is due and no other poll runs; the outcome's name."""
        report = await self._poll(int(self._clock() // self._poll_seconds))
        return report.outcome

    async def poll_once(self) -> CycleReport:
        """One cycle now, whatever the schedule (still under the lock): for tests, benchmarks, operators."""
        return await self._poll(None)

    async def _poll(self, slot: int | None) -> CycleReport:
        lease = _Lease(self._redis, self._lock_seconds)
        try:
            claim = await lease.claim(slot)
            if claim == "locked":
                self._series.magnify_polls.labels("skipped_locked").inc()
        except RedisError as exc:
            # No Redis, no lock and nowhere to store metrics: the next slot tries again.
            _log.error("magnify poll failed", error=f"redis: {exc}")
            return CycleReport(outcome="error", error=f"redis: {exc}")
        if claim == "not_due":
            return CycleReport(outcome="not_due")
        if claim == "locked":
            _log.info("magnify poll skipped", reason="another poll holds the lock")
            return CycleReport(outcome="skipped_locked")
        started = time.monotonic()
        budget = Budget(started + self._budget_seconds)
        keeper = asyncio.create_task(lease.keep(budget))
        report = CycleReport()
        try:
            await self._cycle(budget, report)
        except MagnifyAuthError as exc:
            report.outcome, report.error = "error", str(exc)
            _log.error("magnify auth failed", error=str(exc), status=exc.status, transient=exc.transient)
        except (MagnifyError, StoreUnavailable, RedisError) as exc:
            report.outcome, report.error = "error", f"{type(exc).__name__}: {exc}"
            _log.error("magnify poll failed", error=report.error)
        except Exception as exc:
            # A bug must not kill the schedule: record it, and the next slot tries again.
            report.outcome, report.error = "error", f"internal error: {type(exc).__name__}: {exc}"
            _log.exception("magnify poll crashed")
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await lease.release()
        report.seconds = time.monotonic() - started
        await self._record(report)
        return report

    async def _cycle(self, budget: Budget, report: CycleReport) -> None:
        before = Counter(self._tally.counts)
        try:
            self._reader.start_ms = await self._resolve_start()
            motions = await self._list(budget, report)
            listed = {motion.id for motion in motions}
            unlisted = [mid for mid in await self._checkpoints.motion_ids() if mid not in listed]
            checkpoints = await self._checkpoints.load([*listed, *unlisted])
            for motion in motions:
                checkpoints[motion.id].quiet, checkpoints[motion.id].retired = 0, False  # listed again
            followed = [Motion(mid, "", "") for mid in unlisted if not checkpoints[mid].retired]
            report.unlisted = len(followed)
            motions.extend(followed)  # state "": unlisted, read by id first
            # Least recently read first: what a cut-short cycle leaves goes first next time.
            motions.sort(key=lambda motion: checkpoints[motion.id].polled_at)
            report.motions = len(motions)
            await self._read_all(motions, checkpoints, budget, report)
        finally:
            report.requests = self._tally.counts - before
        if report.failed:
            report.outcome = "error"

    async def _list(self, budget: Budget, report: CycleReport) -> list[Motion]:
        found: dict[str, Motion] = {}
        for state in self._states:
            listed = await self.client.all_motions(state, deadline=budget.deadline)
            report.motions_unreachable += listed.unreachable
            for motion in listed.motions:
                found.setdefault(motion.id, motion)  # a motion changing state mid-listing shows twice
        return list(found.values())

    async def _read_all(
        self, motions: list[Motion], checkpoints: dict[str, Checkpoint], budget: Budget, report: CycleReport
    ) -> None:
        queue = iter(motions)  # shared: each motion is taken by one reader

        async def reader() -> None:
            for motion in queue:
                if budget.exhausted():
                    report.incomplete += 1
                    continue
                await self._read_one(motion, checkpoints[motion.id], budget, report)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._concurrency, len(motions))):
                    group.create_task(reader())
        except BaseExceptionGroup as errors:
            # Auth or Redis failing ends the whole cycle; the readers share the cause, report the first.
            raise errors.exceptions[0] from None

    async def _resolve_start(self) -> int:
        """The floor of a motion never seen, in epoch ms (``MAGBRIDGE_MAGNIFY_START``).

        ``now`` is the time of the first poll against this Redis, recorded once in ``keys.MAGNIFY_START``
        (SET NX), so every worker and every restart agrees, and a motion created later is read whole.
        """
        if self._start == "now":
            # Read every cycle (one round trip): deleting the key moves the start to the next poll.
            await self._redis.set(START_KEY, int(self._clock() * 1000), nx=True)
            return int(await self._redis.get(START_KEY) or 0)
        if self._start_ms is None:
            self._start_ms = 0 if self._start == "everything" else parse_start_ms(self._start)
        return self._start_ms

    async def _read_unlisted(self, motion: Motion, budget: Budget, report: CycleReport) -> None:
        """A checkpointed motion the listing no longer reaches: by id, then its metrics until quiet."""
        try:
            current = await self.client.get_motion(motion.id, deadline=budget.deadline)
        except MagnifyApiError as exc:
            if exc.status != 404:
                raise
            await self._retire(motion.id, "the motion is gone (404)", report)
            return
        if current.state not in self._states:
            return  # DRAFT or SCHEDULED again: nothing sent
        result = await self._reader.read(motion.id, (await self._checkpoints.load([motion.id]))[motion.id], budget)
        await self._add(result, report)
        if not result.complete:
            return
        checkpoint = (await self._checkpoints.load([motion.id]))[motion.id]
        finished = current.state != "EXECUTING"
        checkpoint.quiet = checkpoint.quiet + 1 if finished and result.ingested == 0 else 0
        if checkpoint.quiet >= QUIET_READS:
            await self._retire(motion.id, f"finished ({current.state}), nothing new in {QUIET_READS} reads", report)
            return
        await self._checkpoints.save(motion.id, checkpoint)

    async def _retire(self, motion_id: str, reason: str, report: CycleReport) -> None:
        checkpoint = (await self._checkpoints.load([motion_id]))[motion_id]
        checkpoint.retired = True
        await self._checkpoints.save(motion_id, checkpoint)
        report.retired += 1
        _log.info("magnify unlisted motion retired", motion_id=motion_id, reason=reason)

    async def _read_one(self, motion: Motion, checkpoint: Checkpoint, budget: Budget, report: CycleReport) -> None:
        try:
            if not motion.state:
                await self._read_unlisted(motion, budget, report)
                return
            result = await self._reader.read(motion.id, checkpoint, budget)
        except (MagnifyApiError, InvalidMotionId) as exc:
            # One motion's trouble (a 403, retries used up) must not stop the others.
            report.failed += 1
            _log.warning("magnify motion failed", motion_id=motion.id, error=str(exc))
            return
        await self._add(result, report)

    async def _add(self, result: MotionResult, report: CycleReport) -> None:
        report.ingested += result.ingested
        report.skipped += result.skipped
        report.duplicates += result.duplicates
        report.resets += result.resets
        report.newest_ms = max(report.newest_ms, result.newest_ms)
        if not result.complete:
            report.incomplete += 1
        if result.overflow:
            report.overflow += 1
            self._series.magnify_window_overflow.inc()

    async def _ingest(self, envelopes: list[Envelope]) -> list[bool]:
        flags = await self._store.ingest(envelopes)
        new = sum(flags)
        self._series.magnify_metrics_ingested.inc(new)
        self._series.magnify_metrics_duplicate.inc(len(flags) - new)
        return flags

    def _summary(self, report: CycleReport) -> dict[str, Any]:
        """What ``keys.MAGNIFY_LAST_CYCLE`` keeps of a cycle (its error as the log line has it)."""
        return {
            "at": int(self._clock() * 1000),
            "outcome": report.outcome,
            "seconds": round(report.seconds, 3),
            "motions": report.motions,
            "requests": sum(report.requests.values()),
            "ingested": report.ingested,
            "duplicates": report.duplicates,
            "skipped": report.skipped,
            "failed": report.failed,
            "incomplete": report.incomplete,
            "overflow": report.overflow,
            "unreachable": report.motions_unreachable,
            "error": redact(report.error)[:500],
        }

    async def _record(self, report: CycleReport) -> None:
        self._series.magnify_polls.labels(report.outcome).inc()
        self._series.magnify_poll_duration.observe(report.seconds)
        self._series.magnify_metrics_skipped.inc(report.skipped)
        try:
            if report.outcome != "error" or report.motions:
                await self._gauges.set("magnify_motions_unlisted", report.motions_unreachable)
            newest = int(await self._newest(keys=[NEWEST_KEY], args=[report.newest_ms]))
            if newest > 0:
                lag = max(0.0, self._clock() - newest / 1000)
                await self._gauges.set("magnify_lag_seconds", round(lag, 3))
            # Whichever worker polled: the console shows the last cycle from here.
            await self._redis.set(keys.MAGNIFY_LAST_CYCLE, json.dumps(self._summary(report), separators=(",", ":")))
        except RedisError as exc:
            _log.warning("magnify poll figures not recorded", error=str(exc))
        _log.info(
            "magnify poll finished",
            outcome=report.outcome,
            seconds=round(report.seconds, 3),
            motions=report.motions,
            requests=sum(report.requests.values()),
            ingested=report.ingested,
            duplicates=report.duplicates,
            skipped=report.skipped,
            unlisted=report.unlisted,
            unreachable=report.motions_unreachable,
            incomplete=report.incomplete,
            failed=report.failed,
        )


async def poll_magnify(ctx: dict[str, Any]) -> str:
    """The arq cron job: one ``tick`` of the worker's poller (set up in ``startup``)."""
    poller = ctx.get(POLLER_CTX_KEY)
    if not isinstance(poller, MagnifyPoller):
        return "disabled"
    return await poller.tick()


def magnify_cron_jobs(settings: Settings) -> list[CronJob]:
    """The poll's cron job when Magnify is configured, else none; see the module docstring."""
    if not settings.magnify_enabled:
        return []
    return [
        cron(
            poll_magnify,
            name=CRON_NAME,
            second=cron_seconds(settings.magnify_poll_seconds),
            run_at_startup=True,
            max_tries=1,
        )
    ]
